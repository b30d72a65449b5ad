"""``sal_order``: Kingdee sales orders (SAL_SaleOrder, source database ``jd_erp``).

Kingdee keeps a document in a header (``t_sal_order``, by ``FID``), its entries
(``t_sal_orderentry``, by ``FENTRYID``) and each entry's finance fields (``t_sal_orderentry_f``,
same ``FENTRYID``).  ``FDOCUMENTSTATUS`` is Z (temporary), A (created), B (under review), C
(audited) or D (re-audit); ``FCANCELSTATUS`` A (normal) or B (voided).  Quantities and amounts
are Kingdee's ``decimal(23,10)``.  The entries get a wide table of their own,
``dwd_t_sal_order_entry``: the material and stock look-ups and the ADS are per entry.  Kingdee
deletes only a document that is not audited, its header with its entries and finance entries.
"""

from __future__ import annotations

from flows.declaration import (
    Aggregate,
    Bookkeeping,
    BusinessDay,
    Column,
    Copy,
    Field,
    FirstOf,
    FlowDeclaration,
    IndexDocument,
    Looked,
    Lookup,
    Measure,
    Operation,
    Parent,
    PublishedEvent,
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
from flows.declared.dimensions import JD_MATERIAL, JD_STOCK, STORE_BY_CUSTOMER

ORDER, ENTRY, ENTRY_F = "t_sal_order", "t_sal_orderentry", "t_sal_orderentry_f"
AUDITED, VOIDED = "C", "B"
SAVE, AUDIT, CANCEL, DELETE = "SAVE", "AUDIT", "CANCEL", "DELETE"
#: Statuses of the wide row: saved, audited, voided, deleted in Kingdee.
SAVED_STATUS, AUDITED_STATUS, VOIDED_STATUS, DELETED_STATUS = 10, 20, 50, 90
QTY = AMOUNT = "decimal(23,10)"

SOURCES = (
    Source(ORDER, key=("FID",), entity_key="FID", settled_at="FAPPROVEDATE", deletes_entity=True, columns={
        "FID": "int", "FBILLNO": "varchar(30)", "FBILLTYPEID": "varchar(36)", "FDATE": "datetime",
        "FCUSTID": "int", "FSALEORGID": "int", "FSALEDEPTID": "int", "FSALERID": "int",
        "FDOCUMENTSTATUS": "char(1)", "FCANCELSTATUS": "char(1)", "FCLOSESTATUS": "char(1)",
        "FCREATEDATE": "datetime", "FMODIFYDATE": "datetime", "FAPPROVEDATE": "datetime", "FNOTE": "varchar(255)"}),
    Source(ENTRY, key=("FENTRYID",), entity_key="FID", columns={
        "FENTRYID": "int", "FID": "int", "FSEQ": "int", "FMATERIALID": "int", "FUNITID": "int", "FQTY": QTY,
        "FSTOCKID": "int", "FDELIVERYDATE": "datetime", "FNOTE": "varchar(255)"}),
    Source(ENTRY_F, key=("FENTRYID",), entity_key="FID", columns={
        "FENTRYID": "int", "FID": "int", "FPRICE": AMOUNT, "FTAXPRICE": AMOUNT, "FTAXRATE": "decimal(19,6)",
        "FAMOUNT": AMOUNT, "FTAXAMOUNT": AMOUNT, "FALLAMOUNT": AMOUNT, "FDISCOUNT": AMOUNT}),
)

RAISES = (
    # Every change of the document saves it again, a delete too: an entry deleted from a kept
    # document leaves it with the others; a deleted document (its header gone) with nothing.
    Raise(ORDER, (SAVE,)),
    Raise(ORDER, (AUDIT,), when=(Where("FDOCUMENTSTATUS", "=", AUDITED),), changes=("insert", "update")),
    Raise(ORDER, (CANCEL,), when=(Where("FCANCELSTATUS", "=", VOIDED),), changes=("insert", "update")),
    # A header that is gone: the document deleted with its entries, one binlog delete per row.
    Raise(ORDER, (DELETE,), changes=("delete",)),
    Raise(ENTRY, (SAVE,)),
    Raise(ENTRY_F, (SAVE,)),
)

OPERATIONS = (
    Operation(SAVE, status=SAVED_STATUS, complete_when=(RowArrived(ORDER), RowArrived(ENTRY),
                                                        RowsPaired(ENTRY, ENTRY_F, "FENTRYID"))),
    Operation(AUDIT, after=(SAVE,), status=AUDITED_STATUS, complete_when=(
        RowArrived(ORDER, when=(Where("FDOCUMENTSTATUS", "=", AUDITED),)),)),
    # Kingdee voids and deletes only a document that is not audited, but an audited one can be
    # taken back (re-audit, D) and then voided or deleted: neither is illegal after AUDIT.
    Operation(CANCEL, after=(SAVE,), status=VOIDED_STATUS, complete_when=(
        RowArrived(ORDER, when=(Where("FCANCELSTATUS", "=", VOIDED),)),)),
    # Once the header is deleted (deletes_entity) nothing waits for data: SAVE takes what is
    # left, DELETE marks the document deleted.
    Operation(DELETE, after=(SAVE,), status=DELETED_STATUS),
)

HEADER_TABLE, ENTRY_TABLE = "dwd_t_sal_order", "dwd_t_sal_order_entry"

HEADER = WideTable(HEADER_TABLE, key=("FID",), lookups=(Lookup("store_by_customer", by="FCUSTID", refreshes=True),),
                   columns=(
    Column("FID", "int", Copy(ORDER, "FID")),
    Column("FBILLNO", "varchar(30)", Copy(ORDER, "FBILLNO")),
    Column("FBILLTYPEID", "varchar(36)", Copy(ORDER, "FBILLTYPEID")),
    Column("FDATE", "datetime", Copy(ORDER, "FDATE")),
    Column("FCUSTID", "int", Copy(ORDER, "FCUSTID")),
    Column("store_id", "varchar(32)", Looked("store_by_customer", "store_id")),
    Column("store_name", "varchar(128)", Looked("store_by_customer", "store_name")),
    Column("FSALEORGID", "int", Copy(ORDER, "FSALEORGID")),
    Column("FSALERID", "int", Copy(ORDER, "FSALERID")),
    Column("FDOCUMENTSTATUS", "char(1)", Copy(ORDER, "FDOCUMENTSTATUS")),
    Column("FCANCELSTATUS", "char(1)", Copy(ORDER, "FCANCELSTATUS")),
    Column("FAPPROVEDATE", "datetime", Copy(ORDER, "FAPPROVEDATE")),
    Column("entry_count", "int", Sum(ENTRY, None)),
    Column("FQTY", QTY, Sum(ENTRY, "FQTY")),
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
                 lookups=(Lookup("jd_material", by="FMATERIALID"), Lookup("jd_stock", by="FSTOCKID")), columns=(
    Column("FENTRYID", "int", Copy(ENTRY, "FENTRYID")),
    Column("FID", "int", Copy(ENTRY, "FID")),
    Column("FSEQ", "int", Copy(ENTRY, "FSEQ")),
    Column("FCUSTID", "int", Parent("FCUSTID")),
    Column("store_id", "varchar(32)", Parent("store_id")),
    Column("biz_date", "date", Parent("biz_date")),
    Column("FMATERIALID", "int", Copy(ENTRY, "FMATERIALID")),
    Column("material_number", "varchar(80)", Looked("jd_material", "FNUMBER")),
    Column("material_name", "varchar(255)", Looked("jd_material", "FNAME")),
    Column("FUNITID", "int", Copy(ENTRY, "FUNITID")),
    Column("FQTY", QTY, Copy(ENTRY, "FQTY")),
    Column("FSTOCKID", "int", Copy(ENTRY, "FSTOCKID")),
    Column("stock_number", "varchar(80)", Looked("jd_stock", "FNUMBER")),
    Column("stock_name", "varchar(255)", Looked("jd_stock", "FNAME")),
    Column("FPRICE", AMOUNT, Copy(ENTRY_F, "FPRICE")),
    Column("FTAXPRICE", AMOUNT, Copy(ENTRY_F, "FTAXPRICE")),
    Column("FTAXRATE", "decimal(19,6)", Copy(ENTRY_F, "FTAXRATE")),
    Column("FAMOUNT", AMOUNT, Copy(ENTRY_F, "FAMOUNT")),
    Column("FTAXAMOUNT", AMOUNT, Copy(ENTRY_F, "FTAXAMOUNT")),
    Column("FALLAMOUNT", AMOUNT, Copy(ENTRY_F, "FALLAMOUNT")),
    Column("status", "int", Parent("status")),
))

#: An order counts once audited and while neither voided nor deleted, on its document date.
_CONTRIBUTES = (Where("FDOCUMENTSTATUS", "=", AUDITED), Where("FCANCELSTATUS", "!=", VOIDED),
                Where("status", "<", DELETED_STATUS), Where("biz_date", "not null"))

#: An audited document that is not voided (Kingdee's re-audit, D, takes it back).
_AUDITED = (Where("FDOCUMENTSTATUS", "=", AUDITED), Where("FCANCELSTATUS", "!=", VOIDED))
_DOCUMENT = HEADER_TABLE + "."
EVENTS = (
    # One per audited document: its totals as the entries sum them.
    PublishedEvent("SalesOrderAudited", HEADER_TABLE, key=("FID",), when=_AUDITED, fields=(
        "FID", "FBILLNO", "FDATE", "FCUSTID", "store_id", "FSALEORGID", "FAPPROVEDATE", "entry_count", "FQTY",
        "FAMOUNT", "FTAXAMOUNT", "FALLAMOUNT", "biz_date")),
    # One per entry of an audited document.
    PublishedEvent("SalesOrderEntryAudited", ENTRY_TABLE, key=(_DOCUMENT + "FID", "FENTRYID"), when=_AUDITED,
                   fields=(_DOCUMENT + "FID", _DOCUMENT + "FBILLNO", "FCUSTID", "store_id", "biz_date", "FENTRYID",
                           "FSEQ", "FMATERIALID", "material_number", "FSTOCKID", "FQTY", "FPRICE", "FAMOUNT",
                           "FALLAMOUNT")),
    # A customer's first audited document, by audit time, across documents.
    PublishedEvent("FirstCustomerOrder", HEADER_TABLE, key=("FCUSTID",), when=_AUDITED,
                   fields=("FCUSTID", Field("first_audited_at", "FAPPROVEDATE"), "FBILLNO", "store_id", "biz_date"),
                   first=FirstOf(by="FAPPROVEDATE", table="first_jd_customer_order",
                                 entities="first_jd_customer_order_candidate")),
)

SAL_ORDER = FlowDeclaration(
    name="sal_order",
    entity_prefix="sal_order:",
    description="Kingdee sales orders (SAL_SaleOrder, source database jd_erp)",
    databases=("jd_erp",),
    sources=SOURCES,
    dimensions=(JD_MATERIAL, JD_STOCK, STORE_BY_CUSTOMER),
    raises=RAISES,
    operations=OPERATIONS,
    wide=(HEADER, LINE),
    snapshots=Snapshots("dwd_t_sal_order_snapshot", (HEADER_TABLE, ENTRY_TABLE)),
    aggregates=(
        Aggregate("ads_jd_order_sales", ENTRY_TABLE, ("biz_date", "store_id", "FMATERIALID", "FSTOCKID"), (
            Measure("qty", "FQTY"), Measure("amount", "FAMOUNT"), Measure("tax_amount", "FTAXAMOUNT"),
            Measure("all_amount", "FALLAMOUNT")), _CONTRIBUTES, Retraction("ads_jd_order_ledger")),
    ),
    index=IndexDocument(
        "tdc-orders-sal-order", ("FID", "FBILLNO", "FBILLTYPEID", "FDATE", "FCUSTID", "store_id", "store_name",
                                 "FSALEORGID", "FSALERID", "FDOCUMENTSTATUS", "FCANCELSTATUS", "FAPPROVEDATE",
                                 "entry_count", "FQTY", "FAMOUNT", "FTAXAMOUNT", "FALLAMOUNT", "status", "biz_date",
                                 "version", "updated_at"),
        nested={ENTRY_TABLE: ("FENTRYID", "FSEQ", "FMATERIALID", "material_number", "material_name", "FUNITID",
                              "FQTY", "FSTOCKID", "stock_number", "stock_name", "FPRICE", "FTAXRATE", "FAMOUNT",
                              "FALLAMOUNT")},
        nested_as="entries", text=("store_name", "entries.material_name", "entries.stock_name"),
        newest_by="FDATE", amount="FALLAMOUNT", day="biz_date",
        conditions={"store_id": "store_id", "status": "status", "member_id": "FCUSTID",
                    "sku_id": "entries.material_number"}),
    events=EVENTS,
)
