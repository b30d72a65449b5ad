"""``stk_inventory``: Kingdee inventory (即时库存 STK_Inventory, source database ``jd_erp``).

Not a document but a balance: ``t_stk_inventory`` holds one row (by ``FID``, a GUID) per stock
organisation, keeper, owner, material, warehouse, location, stock status and lot, and every
stock movement Kingdee audits updates that row in place (``FBASEQTY`` in the material's base
unit, ``FQTY`` in its stock unit, ``FBASELOCKQTY``/``FLOCKQTY`` reserved, ``FUPDATETIME`` the last
movement); rows are inserted for a new combination and deleted when Kingdee clears empty ones.
Each row is its own entity.  It is never settled, so there is no ``settled_at``: its day
(``biz_date``) is the day of its last movement.

Stock kept by a customer (``FKEEPERTYPEID`` ``BD_Customer``, otherwise ``BD_KeeperOrg`` or
``BD_Supplier``) is stock at a store, since stores buy from the head office as customers: the
keeper is looked up in ``store_by_customer``, and a change of that mapping moves the balance.

The ADS counts each row's latest state once: its retraction ledger keeps the row's last
contribution and the version it came from, so a row updated fifty times a day adds the newest
quantities, not their sum, and a deleted row takes its contribution back.
"""

from __future__ import annotations

from flows.declaration import (
    Aggregate,
    Bookkeeping,
    BusinessDay,
    Chosen,
    Column,
    Copy,
    FlowDeclaration,
    Looked,
    Lookup,
    Measure,
    Operation,
    Raise,
    Retraction,
    Snapshots,
    Source,
    Status,
    Where,
    WideTable,
)
from flows.declared.dimensions import JD_MATERIAL, JD_STOCK, STORE_BY_CUSTOMER

INVENTORY = "t_stk_inventory"
#: ``FKEEPERTYPEID`` of stock a customer (a store) keeps.
KEPT_BY_CUSTOMER = "BD_Customer"
BALANCE, CLEAR = "BALANCE", "CLEAR"
#: Statuses of the wide row: a live balance, a row Kingdee deleted.
LIVE, CLEARED = 10, 90
QTY = "decimal(23,10)"

SOURCES = (
    Source(INVENTORY, key=("FID",), entity_key="FID", columns={
        "FID": "varchar(36)", "FSTOCKORGID": "int", "FKEEPERTYPEID": "varchar(36)", "FKEEPERID": "int",
        "FOWNERTYPEID": "varchar(36)", "FOWNERID": "int", "FMATERIALID": "int", "FSTOCKID": "int",
        "FSTOCKLOCID": "int", "FAUXPROPID": "int", "FSTOCKSTATUSID": "int", "FLOT": "int", "FMTONO": "varchar(255)",
        "FPRODUCEDATE": "datetime", "FEXPIRYDATE": "datetime", "FBASEUNITID": "int", "FBASEQTY": QTY,
        "FBASELOCKQTY": QTY, "FSTOCKUNITID": "int", "FQTY": QTY, "FLOCKQTY": QTY, "FSECUNITID": "int",
        "FSECQTY": QTY, "FUPDATETIME": "datetime"}),
)

RAISES = (
    Raise(INVENTORY, (BALANCE,), changes=("insert", "update")),
    Raise(INVENTORY, (CLEAR,), changes=("delete",)),
)

OPERATIONS = (
    # Every movement: the row as it is now, whatever it is by the time BALANCE runs (nothing to
    # wait for: a row deleted before its BALANCE ran leaves a cleared row, and an update that
    # arrives after the delete it preceded changes nothing, the delete being newer).
    Operation(BALANCE, status=LIVE),
    # The row is gone: there is nothing to wait for.
    Operation(CLEAR, after=(BALANCE,), status=CLEARED),
)

TABLE = "dwd_t_stk_inventory"

BALANCES = WideTable(
    TABLE, key=("FID",),
    lookups=(Lookup("jd_material", by="FMATERIALID"), Lookup("jd_stock", by="FSTOCKID"),
             # A customer newly mapped to a store moves its stock to that store.
             Lookup("store_by_customer", by="FCUSTID", refreshes=True)),
    # Where a material is (search), a store's stock, the rows that moved on a day (reconciliation).
    indexes={"ix_dwd_t_stk_inventory_material_stock": ("FMATERIALID", "FSTOCKID"),
             "ix_dwd_t_stk_inventory_store_material": ("store_id", "FMATERIALID"),
             "ix_dwd_t_stk_inventory_org_stock": ("FSTOCKORGID", "FSTOCKID"),
             "ix_dwd_t_stk_inventory_biz_date": ("biz_date",)},
    columns=(
        Column("FID", "varchar(36)", Copy(INVENTORY, "FID")),
        Column("FSTOCKORGID", "int", Copy(INVENTORY, "FSTOCKORGID")),
        Column("FKEEPERTYPEID", "varchar(36)", Copy(INVENTORY, "FKEEPERTYPEID")),
        Column("FKEEPERID", "int", Copy(INVENTORY, "FKEEPERID")),
        Column("FOWNERTYPEID", "varchar(36)", Copy(INVENTORY, "FOWNERTYPEID")),
        Column("FOWNERID", "int", Copy(INVENTORY, "FOWNERID")),
        # The keeper when it is a customer, else NULL: an organisation's id is no customer's.
        Column("FCUSTID", "int", Chosen(INVENTORY, "FKEEPERID", newest_by="FUPDATETIME",
                                        when=(Where("FKEEPERTYPEID", "=", KEPT_BY_CUSTOMER),))),
        Column("store_id", "varchar(32)", Looked("store_by_customer", "store_id")),
        Column("store_name", "varchar(128)", Looked("store_by_customer", "store_name")),
        Column("FMATERIALID", "int", Copy(INVENTORY, "FMATERIALID")),
        Column("material_number", "varchar(80)", Looked("jd_material", "FNUMBER")),
        Column("material_name", "varchar(255)", Looked("jd_material", "FNAME")),
        Column("FSTOCKID", "int", Copy(INVENTORY, "FSTOCKID")),
        Column("stock_number", "varchar(80)", Looked("jd_stock", "FNUMBER")),
        Column("stock_name", "varchar(255)", Looked("jd_stock", "FNAME")),
        Column("FSTOCKLOCID", "int", Copy(INVENTORY, "FSTOCKLOCID")),
        Column("FSTOCKSTATUSID", "int", Copy(INVENTORY, "FSTOCKSTATUSID")),
        Column("FLOT", "int", Copy(INVENTORY, "FLOT")),
        Column("FPRODUCEDATE", "datetime", Copy(INVENTORY, "FPRODUCEDATE")),
        Column("FEXPIRYDATE", "datetime", Copy(INVENTORY, "FEXPIRYDATE")),
        Column("FBASEUNITID", "int", Copy(INVENTORY, "FBASEUNITID")),
        Column("FBASEQTY", QTY, Copy(INVENTORY, "FBASEQTY")),
        Column("FBASELOCKQTY", QTY, Copy(INVENTORY, "FBASELOCKQTY")),
        Column("FSTOCKUNITID", "int", Copy(INVENTORY, "FSTOCKUNITID")),
        Column("FQTY", QTY, Copy(INVENTORY, "FQTY")),
        Column("FLOCKQTY", QTY, Copy(INVENTORY, "FLOCKQTY")),
        Column("FUPDATETIME", "datetime", Copy(INVENTORY, "FUPDATETIME")),
        Column("status", "int", Status()),
        Column("biz_date", "date", BusinessDay(("FUPDATETIME",))),
        Column("last_operation", "varchar(16)", Bookkeeping("last_operation")),
        Column("version", "int", Bookkeeping("version")),
        Column("updated_at", "datetime(3)", Bookkeeping("updated_at")),
        Column("source_digest", "bigint", Bookkeeping("source_digest")),
    ))

#: A row counts while Kingdee has it.  Not by day: the ledger keeps one contribution per row,
#: so a row's balance sits under one key and moves when the key does; a day key (the day of the
#: last movement) would take yesterday's balance away from yesterday.
_CONTRIBUTES = (Where("status", "=", LIVE), Where("FBASEQTY", "not null"))

STK_INVENTORY = FlowDeclaration(
    name="stk_inventory",
    entity_prefix="stk_inventory:",
    description="Kingdee inventory balances (STK_Inventory, source database jd_erp)",
    databases=("jd_erp",),
    sources=SOURCES,
    dimensions=(JD_MATERIAL, JD_STOCK, STORE_BY_CUSTOMER),
    raises=RAISES,
    operations=OPERATIONS,
    wide=(BALANCES,),
    snapshots=Snapshots("dwd_t_stk_inventory_snapshot", (TABLE,)),
    aggregates=(
        Aggregate("ads_jd_stock_balance", TABLE, ("FSTOCKORGID", "store_id", "FMATERIALID", "FSTOCKID"), (
            Measure("base_qty", "FBASEQTY"), Measure("base_lock_qty", "FBASELOCKQTY"),
            Measure("base_available_qty", "FBASEQTY", less="FBASELOCKQTY"), Measure("qty", "FQTY"),
            Measure("lock_qty", "FLOCKQTY")), _CONTRIBUTES, Retraction("ads_jd_stock_balance_ledger")),
    ),
)
