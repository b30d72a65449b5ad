"""The master data the demo histories' dimension rows carry.

The flows share some dimensions (``store``, ``sku``: ``flows.declared.dimensions``), and a
dimension is one table whatever flow feeds it, so every demo writes the same rows for a key it
shares with another: a ``pos`` history run after a ``gqsh`` one changes no store or SKU the
other expects.
"""

from __future__ import annotations

#: (store_id, store_name, city, region): the ``store`` dimension (``dim_store_shop``).
STORES = [(f"S{n:03d}", f"Store {n}", city, region) for n, (city, region) in enumerate(
    [("Shanghai", "East"), ("Hangzhou", "East"), ("Beijing", "North"), ("Tianjin", "North"),
     ("Guangzhou", "South"), ("Shenzhen", "South"), ("Chengdu", "West"), ("Wuhan", "Central")], start=1)]
CATEGORIES = ["hotpot base", "meat", "seafood", "vegetables", "noodles", "drinks"]
#: (sku_id, sku_name, category, unit): packaged goods of the ``sku`` dimension (``dim_product_sku``).
SKUS = [(f"K{n:04d}", f"SKU {n}", CATEGORIES[n % len(CATEGORIES)], "pack") for n in range(1, 41)]
#: Goods the tills sell by weight (kg, three decimal places), SKUs of their own.
WEIGHED_SKUS = [(f"K{n:04d}", name, category, "kg") for n, (name, category) in enumerate(
    [("Sliced beef", "meat"), ("Lamb rolls", "meat"), ("Pork belly", "meat"), ("Shrimp", "seafood"),
     ("Squid", "seafood"), ("Napa cabbage", "vegetables"), ("Lotus root", "vegetables"),
     ("Enoki mushroom", "vegetables"), ("Potato", "vegetables"), ("Hand-pulled noodles", "noodles")], start=501)]

#: (FMATERIALID, FNUMBER, FNAME, FSPECIFICATION, FMATERIALGROUP, FBASEUNITID): Kingdee materials
#: (``jd_material``), what the head office sells to its stores.
MATERIALS = [(100_000 + n, f"01.{group:02d}.{n:04d}", name, spec, 200 + group, unit) for n, (name, spec, group, unit)
             in enumerate([
                 ("Spicy hotpot base", "500g x 20 bags", 1, 10101), ("Tomato hotpot base", "500g x 20 bags", 1, 10101),
                 ("Mushroom hotpot base", "400g x 24 bags", 1, 10101), ("Beef tallow", "2.5kg x 4 tubs", 1, 10101),
                 ("Frozen sliced beef", "kg", 2, 10102), ("Frozen lamb rolls", "kg", 2, 10102),
                 ("Frozen shrimp paste", "kg", 3, 10102), ("Dipping sauce", "180g x 40 jars", 4, 10101),
                 ("Sesame paste", "1kg x 12 jars", 4, 10101), ("Sweet potato noodles", "kg", 5, 10102),
                 ("Soy milk", "1L x 12 boxes", 6, 10101), ("Plum drink", "330ml x 24 cans", 6, 10101)], start=1)]
#: Kingdee units: 10101 carton (whole numbers), 10102 kg (three decimal places).
WEIGHED_UNIT = 10102
#: (FSTOCKID, FNUMBER, FNAME, FSTOCKPROPERTY, FUSEORGID): Kingdee warehouses (``jd_stock``).
STOCKS = [(100_100 + n, f"CK{n:03d}", name, "1", 100_001) for n, name in enumerate(
    ["Shanghai central warehouse", "Shanghai cold store", "Beijing central warehouse", "Guangzhou central warehouse",
     "Chengdu central warehouse"], start=1)]
#: (FCUSTID, FNUMBER, FNAME, store_id, store_name): the stores as Kingdee customers (``store_by_customer``).
CUSTOMERS = [(300_000 + n, f"CUST{n:04d}", f"{name} (customer)", store_id, name)
             for n, (store_id, name, _, _) in enumerate(STORES, start=1)]
#: (FSUPPLIERID, FNUMBER, FNAME, materials it supplies): Kingdee suppliers (no dimension of their own).
SUPPLIERS = [(400_000 + n, f"VEN{n:04d}", name, tuple(MATERIALS[i][0] for i in supplied)) for n, (name, supplied)
             in enumerate([
                 ("Chongqing Spice Foods", (0, 1, 2, 3)), ("Sichuan Tallow Works", (0, 3)),
                 ("Inner Mongolia Prairie Meat", (4, 5)), ("Zhanjiang Ocean Foods", (6,)),
                 ("Shandong Sauce Co.", (7, 8)), ("Henan Starch Noodle Mill", (9,)),
                 ("Heilongjiang Soy Dairy", (10,)), ("Guangxi Fruit Drinks", (11,))], start=1)]
#: The Kingdee dimensions' tables: table -> (columns, rows), the rows above.
KINGDEE_DIMENSIONS: dict[str, tuple[tuple[str, ...], list[tuple[object, ...]]]] = {
    "dim_jd_erp_material": (("FMATERIALID", "FNUMBER", "FNAME", "FSPECIFICATION", "FMATERIALGROUP", "FBASEUNITID"),
                            list(MATERIALS)),
    "dim_jd_erp_stock": (("FSTOCKID", "FNUMBER", "FNAME", "FSTOCKPROPERTY", "FUSEORGID"), list(STOCKS)),
    "dim_store_shop_fcustid": (("FCUSTID", "FNUMBER", "FNAME", "store_id", "store_name"), list(CUSTOMERS)),
}
