"""``pur_mrb``: Kingdee purchase returns (采购退料单 PUR_MRB, source database ``jd_erp``).

A purchase return sends goods received from a supplier back to it: the stock organisation
(``FSTOCKORGID``) issues them out of a warehouse, and the supplier either replaces them
(``FMRMODE`` 退料补料: ``FREPLENISHQTY``) or has them deducted from what it is owed (退料并扣款:
``FKEAPAMTQTY``).  Like every Kingdee document it is a header (``t_pur_mrb``, by ``FID``), its
entries (``t_pur_mrbentry``, by ``FENTRYID``; ``FRMREALQTY`` is the quantity really returned)
and each entry's finance fields (``t_pur_mrbentry_f``, same ``FENTRYID``).  ``FDOCUMENTSTATUS``
is Z (temporary), A (created), B (under review), C (audited) or D (re-audit); ``FCANCELSTATUS``
A (normal) or B (voided).  Kingdee voids and deletes only a document that is not audited, and
the return moves stock when it is audited: only audited, unvoided returns reach the ADS.
Quantities and amounts are Kingdee's ``decimal(23,10)``; the entries get a wide table of their
own, ``dwd_t_pur_mrb_entry``, because the material and stock look-ups and the ADS are per entry.
"""

from __future__ import annotations

from flows.declaration import (
    Aggregate,
    Bookkeeping,
    BusinessDay,
    Column,
    Copy,
    FlowDeclaration,
    IndexDocument,
    Looked,
    Lookup,
    Measure,
    Operation,
    Parent,
    Raise,
    Retraction,
    RowArrived,
    RowsPaired,
    Snapshots,
    Source,
    Status,
    Sum,
    Where,
    WideTable,
)
from flows.declared.dimensions import JD_MATERIAL, JD_STOCK

MRB, ENTRY, ENTRY_F = "t_pur_mrb", "t_pur_mrbentry", "t_pur_mrbentry_f"
AUDITED, VOIDED = "C", "B"
SAVE, AUDIT, CANCEL, DELETE = "SAVE", "AUDIT", "CANCEL", "DELETE"
#: Statuses of the wide row: saved, audited, voided, deleted in Kingdee.
SAVED_STATUS, AUDITED_STATUS, VOIDED_STATUS, DELETED_STATUS = 10, 20, 50, 90
QTY = AMOUNT = "decimal(23,10)"

SOURCES = (
    Source(MRB, key=("FID",), entity_key="FID", settled_at="FAPPROVEDATE", deletes_entity=True, columns={
        "FID": "int", "FBILLNO": "varchar(30)", "FBILLTYPEID": "varchar(36)", "FDATE": "datetime",
        "FMRTYPE": "char(1)", "FMRMODE": "char(1)", "FSTOCKORGID": "int", "FREQUIREORGID": "int",
        "FPURCHASEORGID": "int", "FSUPPLIERID": "int", "FMRDEPTID": "int", "FSTOCKERID": "int",
        "FPURCHASERID": "int", "FDOCUMENTSTATUS": "char(1)", "FCANCELSTATUS": "char(1)",
        "FCREATEDATE": "datetime", "FMODIFYDATE": "datetime", "FAPPROVEDATE": "datetime",
        "FDESCRIPTION": "varchar(255)"}),
    Source(ENTRY, key=("FENTRYID",), entity_key="FID", columns={
        "FENTRYID": "int", "FID": "int", "FSEQ": "int", "FMATERIALID": "int", "FUNITID": "int",
        "FRMREALQTY": QTY, "FREPLENISHQTY": QTY, "FKEAPAMTQTY": QTY, "FBASEUNITID": "int", "FBASEUNITQTY": QTY,
        "FSTOCKID": "int", "FSTOCKLOCID": "int", "FSTOCKSTATUSID": "int", "FLOT": "int", "FLOT_TEXT": "varchar(255)",
        "FNOTE": "varchar(255)"}),
    Source(ENTRY_F, key=("FENTRYID",), entity_key="FID", columns={
        "FENTRYID": "int", "FID": "int", "FPRICEUNITID": "int", "FPRICE": AMOUNT, "FTAXPRICE": AMOUNT,
        "FTAXRATE": "decimal(19,6)", "FAMOUNT": AMOUNT, "FTAXAMOUNT": AMOUNT, "FALLAMOUNT": AMOUNT}),
)

_AUDITED = (Where("FDOCUMENTSTATUS", "=", AUDITED), Where("FAPPROVEDATE", "not null"))
_VOIDED = (Where("FCANCELSTATUS", "=", VOIDED),)

RAISES = (
    # Every change of the document saves it again, a delete too: an entry deleted from a kept
    # document leaves it with the others; a deleted document (its header gone) with nothing.
    Raise(MRB, (SAVE,)),
    Raise(MRB, (AUDIT,), when=(Where("FDOCUMENTSTATUS", "=", AUDITED),), changes=("insert", "update")),
    Raise(MRB, (CANCEL,), when=_VOIDED, changes=("insert", "update")),
    # A header that is gone: Kingdee deletes the document (only one that is not audited) with
    # its entries and finance entries, one binlog delete per row, in any order.
    Raise(MRB, (DELETE,), changes=("delete",)),
    Raise(ENTRY, (SAVE,)),
    Raise(ENTRY_F, (SAVE,)),
)

OPERATIONS = (
    Operation(SAVE, status=SAVED_STATUS, complete_when=(RowArrived(MRB), RowArrived(ENTRY),
                                                        RowsPaired(ENTRY, ENTRY_F, "FENTRYID"))),
    Operation(AUDIT, after=(SAVE,), status=AUDITED_STATUS, complete_when=(RowArrived(MRB, when=_AUDITED),)),
    # Kingdee voids and deletes only a return that is not audited, but an audited one can be
    # taken back (re-audit, D) and then voided or deleted: neither is illegal after AUDIT.
    Operation(CANCEL, after=(SAVE,), status=VOIDED_STATUS, complete_when=(RowArrived(MRB, when=_VOIDED),)),
    # Once the header is deleted (deletes_entity) nothing waits for data: SAVE takes what is
    # left, DELETE marks the document deleted.
    Operation(DELETE, after=(SAVE,), status=DELETED_STATUS),
)

HEADER_TABLE, ENTRY_TABLE = "dwd_t_pur_mrb", "dwd_t_pur_mrb_entry"

HEADER = WideTable(HEADER_TABLE, key=("FID",),
                   # A day's returns (reconciliation: on the wide row's day, or audited on it),
                   # a bill number and a supplier's returns (search).
                   indexes={"ix_dwd_t_pur_mrb_biz_date": ("biz_date",),
                            "ix_dwd_t_pur_mrb_approved": ("FAPPROVEDATE",),
                            "ix_dwd_t_pur_mrb_billno": ("FBILLNO",),
                            "ix_dwd_t_pur_mrb_supplier_day": ("FSUPPLIERID", "biz_date")},
                   columns=(
    Column("FID", "int", Copy(MRB, "FID")),
    Column("FBILLNO", "varchar(30)", Copy(MRB, "FBILLNO")),
    Column("FBILLTYPEID", "varchar(36)", Copy(MRB, "FBILLTYPEID")),
    Column("FDATE", "datetime", Copy(MRB, "FDATE")),
    Column("FMRTYPE", "char(1)", Copy(MRB, "FMRTYPE")),
    Column("FMRMODE", "char(1)", Copy(MRB, "FMRMODE")),
    Column("FSTOCKORGID", "int", Copy(MRB, "FSTOCKORGID")),
    Column("FPURCHASEORGID", "int", Copy(MRB, "FPURCHASEORGID")),
    Column("FSUPPLIERID", "int", Copy(MRB, "FSUPPLIERID")),
    Column("FMRDEPTID", "int", Copy(MRB, "FMRDEPTID")),
    Column("FPURCHASERID", "int", Copy(MRB, "FPURCHASERID")),
    Column("FDOCUMENTSTATUS", "char(1)", Copy(MRB, "FDOCUMENTSTATUS")),
    Column("FCANCELSTATUS", "char(1)", Copy(MRB, "FCANCELSTATUS")),
    Column("FAPPROVEDATE", "datetime", Copy(MRB, "FAPPROVEDATE")),
    Column("entry_count", "int", Sum(ENTRY, None)),
    Column("FRMREALQTY", QTY, Sum(ENTRY, "FRMREALQTY")),
    Column("FAMOUNT", AMOUNT, Sum(ENTRY_F, "FAMOUNT")),
    Column("FTAXAMOUNT", AMOUNT, Sum(ENTRY_F, "FTAXAMOUNT")),
    Column("FALLAMOUNT", AMOUNT, Sum(ENTRY_F, "FALLAMOUNT")),
    Column("status", "int", Status()),
    Column("biz_date", "date", BusinessDay(("FDATE",))),
    Column("last_operation", "varchar(16)", Bookkeeping("last_operation")),
    Column("version", "int", Bookkeeping("version")),
    Column("updated_at", "datetime(3)", Bookkeeping("updated_at")),
    Column("source_digest", "bigint", Bookkeeping("source_digest")),
))

LINE = WideTable(ENTRY_TABLE, key=("FENTRYID",), rows_from=ENTRY, parent=HEADER_TABLE,
                 lookups=(Lookup("jd_material", by="FMATERIALID"), Lookup("jd_stock", by="FSTOCKID")),
                 # A document's entries, a day's entries (reconciliation), a material's returns (search).
                 indexes={"ix_dwd_t_pur_mrb_entry_fid": ("FID",), "ix_dwd_t_pur_mrb_entry_biz_date": ("biz_date",),
                          "ix_dwd_t_pur_mrb_entry_material": ("FMATERIALID",)},
                 columns=(
    Column("FENTRYID", "int", Copy(ENTRY, "FENTRYID")),
    Column("FID", "int", Copy(ENTRY, "FID")),
    Column("FSEQ", "int", Copy(ENTRY, "FSEQ")),
    Column("FSTOCKORGID", "int", Parent("FSTOCKORGID")),
    Column("FSUPPLIERID", "int", Parent("FSUPPLIERID")),
    Column("biz_date", "date", Parent("biz_date")),
    Column("FMATERIALID", "int", Copy(ENTRY, "FMATERIALID")),
    Column("material_number", "varchar(80)", Looked("jd_material", "FNUMBER")),
    Column("material_name", "varchar(255)", Looked("jd_material", "FNAME")),
    Column("FUNITID", "int", Copy(ENTRY, "FUNITID")),
    Column("FRMREALQTY", QTY, Copy(ENTRY, "FRMREALQTY")),
    Column("FREPLENISHQTY", QTY, Copy(ENTRY, "FREPLENISHQTY")),
    Column("FKEAPAMTQTY", QTY, Copy(ENTRY, "FKEAPAMTQTY")),
    Column("FBASEUNITID", "int", Copy(ENTRY, "FBASEUNITID")),
    Column("FBASEUNITQTY", QTY, Copy(ENTRY, "FBASEUNITQTY")),
    Column("FSTOCKID", "int", Copy(ENTRY, "FSTOCKID")),
    Column("stock_number", "varchar(80)", Looked("jd_stock", "FNUMBER")),
    Column("stock_name", "varchar(255)", Looked("jd_stock", "FNAME")),
    Column("FSTOCKLOCID", "int", Copy(ENTRY, "FSTOCKLOCID")),
    Column("FSTOCKSTATUSID", "int", Copy(ENTRY, "FSTOCKSTATUSID")),
    Column("FLOT", "int", Copy(ENTRY, "FLOT")),
    Column("FLOT_TEXT", "varchar(255)", Copy(ENTRY, "FLOT_TEXT")),
    Column("FPRICE", AMOUNT, Copy(ENTRY_F, "FPRICE")),
    Column("FTAXPRICE", AMOUNT, Copy(ENTRY_F, "FTAXPRICE")),
    Column("FTAXRATE", "decimal(19,6)", Copy(ENTRY_F, "FTAXRATE")),
    Column("FAMOUNT", AMOUNT, Copy(ENTRY_F, "FAMOUNT")),
    Column("FTAXAMOUNT", AMOUNT, Copy(ENTRY_F, "FTAXAMOUNT")),
    Column("FALLAMOUNT", AMOUNT, Copy(ENTRY_F, "FALLAMOUNT")),
    Column("status", "int", Parent("status")),
))

_INSTOCK_KEYS = ("biz_date", "FSTOCKORGID", "FSUPPLIERID", "FMATERIALID", "FSTOCKID")
#: A return counts once audited and while neither voided nor deleted, on its document date.
_CONTRIBUTES = (Where("FDOCUMENTSTATUS", "=", AUDITED), Where("FCANCELSTATUS", "!=", VOIDED),
                Where("status", "<", DELETED_STATUS), Where("biz_date", "not null"))

PUR_MRB = FlowDeclaration(
    name="pur_mrb",
    entity_prefix="pur_mrb:",
    description="Kingdee purchase returns (PUR_MRB, source database jd_erp)",
    databases=("jd_erp",),
    sources=SOURCES,
    dimensions=(JD_MATERIAL, JD_STOCK),
    raises=RAISES,
    operations=OPERATIONS,
    wide=(HEADER, LINE),
    snapshots=Snapshots("dwd_t_pur_mrb_snapshot", (HEADER_TABLE, ENTRY_TABLE)),
    aggregates=(
        # The inbound-stock ADS: what went back to suppliers (a purchase receipt flow would add
        # what came in); quantities are the return's, positive.
        Aggregate("ads_jd_instock", ENTRY_TABLE, _INSTOCK_KEYS, (
            Measure("return_qty", "FRMREALQTY"), Measure("replenish_qty", "FREPLENISHQTY"),
            Measure("deduct_qty", "FKEAPAMTQTY"), Measure("return_amount", "FAMOUNT"),
            Measure("return_tax_amount", "FTAXAMOUNT"), Measure("return_all_amount", "FALLAMOUNT")),
            _CONTRIBUTES, Retraction("ads_jd_instock_ledger")),
    ),
    index=IndexDocument(
        "tdc-orders-pur-mrb", ("FID", "FBILLNO", "FBILLTYPEID", "FDATE", "FMRTYPE", "FMRMODE", "FSTOCKORGID",
                               "FPURCHASEORGID", "FSUPPLIERID", "FDOCUMENTSTATUS", "FCANCELSTATUS", "FAPPROVEDATE",
                               "entry_count", "FRMREALQTY", "FAMOUNT", "FTAXAMOUNT", "FALLAMOUNT", "status",
                               "biz_date", "version", "updated_at"),
        nested={ENTRY_TABLE: ("FENTRYID", "FSEQ", "FMATERIALID", "material_number", "material_name", "FUNITID",
                              "FRMREALQTY", "FREPLENISHQTY", "FKEAPAMTQTY", "FSTOCKID", "stock_number", "stock_name",
                              "FLOT_TEXT", "FPRICE", "FAMOUNT", "FALLAMOUNT")},
        nested_as="entries", text=("entries.material_name", "entries.stock_name"), newest_by="FDATE",
        amount="FALLAMOUNT", day="biz_date",
        # A return has no store or channel; its counterparty is the supplier.
        conditions={"status": "status", "member_id": "FSUPPLIERID", "sku_id": "entries.material_number"}),
)
