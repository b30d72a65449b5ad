"""Dimensions more than one flow looks up, declared once (``flows.validation.problems_across``
refuses a dimension two flows declare differently)."""

from __future__ import annotations

from flows.declaration import Dimension

#: The store master: CDC from the order centre's dim_store_shop and the T+1 reload.
STORE = Dimension("store", table="dim_store_shop", key="store_id", columns={
    "store_id": "varchar(32)", "store_name": "varchar(128)", "city": "varchar(64)", "region": "varchar(64)"})

#: The product master by SKU.
SKU = Dimension("sku", table="dim_product_sku", key="sku_id", columns={
    "sku_id": "varchar(32)", "sku_name": "varchar(128)", "category": "varchar(64)", "unit": "varchar(16)"})

#: Kingdee materials (BD_MATERIAL), by their internal id.
JD_MATERIAL = Dimension("jd_material", table="dim_jd_erp_material", key="FMATERIALID", columns={
    "FMATERIALID": "int", "FNUMBER": "varchar(80)", "FNAME": "varchar(255)", "FSPECIFICATION": "varchar(510)",
    "FMATERIALGROUP": "int", "FBASEUNITID": "int"})

#: Kingdee warehouses (BD_STOCK).
JD_STOCK = Dimension("jd_stock", table="dim_jd_erp_stock", key="FSTOCKID", columns={
    "FSTOCKID": "int", "FNUMBER": "varchar(80)", "FNAME": "varchar(255)", "FSTOCKPROPERTY": "char(1)",
    "FUSEORGID": "int"})

#: Which store a Kingdee customer is (stores buy from the head office as customers).
STORE_BY_CUSTOMER = Dimension("store_by_customer", table="dim_store_shop_fcustid", key="FCUSTID", columns={
    "FCUSTID": "int", "FNUMBER": "varchar(80)", "FNAME": "varchar(255)", "store_id": "varchar(32)",
    "store_name": "varchar(128)"})
