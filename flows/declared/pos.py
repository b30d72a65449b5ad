"""``pos``: sales and refunds of the store tills (the POS centre, source database ``gqsh_pos``).

A sale is a document (``t_order_info``, by ``order_no``) with its lines (``t_order_item``); a
refund is a document of its own (``t_order_refund_info``, by ``refund_no``) with the lines it
takes back (``t_order_item_refund``, each naming the sale line by ``item_id``).  Quantities are
``decimal(12,3)``: weighed goods are sold by the kilogram.
"""

from __future__ import annotations

from flows.declaration import (
    Aggregate,
    Bookkeeping,
    BusinessDay,
    Chosen,
    Column,
    Copy,
    DetailsSum,
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
    RowsCounted,
    Snapshots,
    Source,
    Status,
    Sum,
    Through,
    Where,
    WideTable,
)
from flows.declared.dimensions import SKU, STORE

ORDER, ITEM, REFUND, ITEM_REFUND = "t_order_info", "t_order_item", "t_order_refund_info", "t_order_item_refund"
#: ``t_order_info.order_status``: held at the till, paid, voided before payment.
HELD, PAID, VOIDED = 10, 20, 90
#: ``t_order_refund_info.refund_status``: only REFUNDED moves money.
APPLIED, REFUNDED, REJECTED = 10, 20, 30
SUBMIT, PAY, REFUND_OP, VOID = "SUBMIT", "PAY", "REFUND", "VOID"

SOURCES = (
    Source(ORDER, key=("order_no",), entity_key="order_no", settled_at="pay_time", columns={
        "order_no": "varchar(32)", "store_code": "varchar(32)", "pos_no": "varchar(16)", "shift_no": "varchar(32)",
        "cashier_id": "varchar(32)", "cashier_name": "varchar(64)", "member_id": "varchar(32)",
        "order_status": "tinyint", "item_count": "int", "total_amount": "money", "discount_amount": "money",
        "pay_amount": "money", "pay_type": "varchar(16)", "pay_time": "datetime(3)", "order_time": "datetime(3)",
        "create_time": "datetime(3)", "update_time": "timestamp(3)"},
        reads={SUBMIT: ("order_no", "store_code", "pos_no", "shift_no", "cashier_id", "cashier_name", "member_id",
                        "item_count", "total_amount", "discount_amount", "order_time"),
               PAY: ("pay_amount", "pay_type", "pay_time"), VOID: ()}),
    Source(ITEM, key=("id",), entity_key="order_no", columns={
        "id": "bigint", "order_no": "varchar(32)", "line_no": "int", "sku_code": "varchar(32)",
        "barcode": "varchar(32)", "quantity": "decimal(12,3)", "price": "money", "sale_price": "money",
        "discount_amount": "money", "amount": "money", "create_time": "datetime(3)"}),
    Source(REFUND, key=("refund_no",), entity_key="order_no", columns={
        "refund_no": "varchar(32)", "order_no": "varchar(32)", "store_code": "varchar(32)", "pos_no": "varchar(16)",
        "cashier_id": "varchar(32)", "refund_status": "tinyint", "refund_amount": "money",
        "refund_reason": "varchar(255)", "refund_time": "datetime(3)", "create_time": "datetime(3)",
        "update_time": "timestamp(3)"}),
    Source(ITEM_REFUND, key=("id",), entity_key="order_no", columns={
        "id": "bigint", "refund_no": "varchar(32)", "order_no": "varchar(32)", "item_id": "bigint",
        "sku_code": "varchar(32)", "refund_quantity": "decimal(12,3)", "refund_amount": "money"}),
)

RAISES = (
    Raise(ORDER, (SUBMIT,), when=(Where("order_status", "in", (HELD, PAID, VOIDED)),)),
    Raise(ORDER, (PAY,), when=(Where("order_status", "=", PAID),)),
    Raise(ORDER, (VOID,), when=(Where("order_status", "=", VOIDED),)),
    Raise(ITEM, (SUBMIT,)),
    Raise(REFUND, (REFUND_OP,)),
    Raise(ITEM_REFUND, (REFUND_OP,)),
)

_REFUNDED = (Where("refund_status", "=", REFUNDED),)
OPERATIONS = (
    Operation(SUBMIT, status=HELD, complete_when=(RowArrived(ORDER), RowsCounted(ITEM, ORDER, "item_count"))),
    Operation(PAY, after=(SUBMIT,), status=PAID, complete_when=(
        RowArrived(ORDER, when=(Where("order_status", "=", PAID), Where("pay_time", "not null"))),)),
    Operation(REFUND_OP, after=(PAY,), complete_when=(
        DetailsSum(ITEM_REFUND, "refund_amount", REFUND, "refund_amount", link="refund_no", when=_REFUNDED),)),
    Operation(VOID, after=(SUBMIT,), illegal_after=(PAY,), status=VOIDED, complete_when=(
        RowArrived(ORDER, when=(Where("order_status", "=", VOIDED),)),)),
)

HEADER_TABLE, LINE_TABLE = "dwd_gqsh_pos_order_t_order_info", "dwd_gqsh_pos_order_t_order_item"
_REFUNDED_LINE = Through(REFUND, "refund_no", _REFUNDED)

HEADER = WideTable(HEADER_TABLE, key=("order_no",), lookups=(Lookup("store", by="store_code", refreshes=True),),
                   columns=(
    Column("order_no", "varchar(32)", Copy(ORDER, "order_no")),
    Column("store_code", "varchar(32)", Copy(ORDER, "store_code")),
    Column("store_name", "varchar(128)", Looked("store", "store_name")),
    Column("city", "varchar(64)", Looked("store", "city")),
    Column("region", "varchar(64)", Looked("store", "region")),
    Column("pos_no", "varchar(16)", Copy(ORDER, "pos_no")),
    Column("shift_no", "varchar(32)", Copy(ORDER, "shift_no")),
    Column("cashier_id", "varchar(32)", Copy(ORDER, "cashier_id")),
    Column("cashier_name", "varchar(64)", Copy(ORDER, "cashier_name")),
    Column("member_id", "varchar(32)", Copy(ORDER, "member_id")),
    Column("order_status", "tinyint", Status()),
    Column("item_count", "int", Copy(ORDER, "item_count")),
    Column("total_amount", "money", Copy(ORDER, "total_amount")),
    Column("discount_amount", "money", Copy(ORDER, "discount_amount")),
    Column("pay_amount", "money", Copy(ORDER, "pay_amount")),
    Column("pay_type", "varchar(16)", Copy(ORDER, "pay_type")),
    Column("pay_time", "datetime(3)", Copy(ORDER, "pay_time")),
    Column("order_time", "datetime(3)", Copy(ORDER, "order_time")),
    Column("refund_amount", "money", Sum(REFUND, "refund_amount", when=_REFUNDED)),
    Column("refund_count", "int", Sum(REFUND, None, when=_REFUNDED)),
    Column("last_refund_time", "datetime(3)", Chosen(REFUND, "refund_time", newest_by="refund_time",
                                                     when=_REFUNDED)),
    Column("biz_date", "date", BusinessDay(("pay_time", "order_time"))),
    Column("last_operation", "varchar(16)", Bookkeeping("last_operation")),
    Column("version", "int", Bookkeeping("version")),
    Column("updated_at", "datetime(3)", Bookkeeping("updated_at")),
    Column("source_digest", "bigint", Bookkeeping("source_digest")),
))

LINE = WideTable(LINE_TABLE, key=("item_id",), rows_from=ITEM, parent=HEADER_TABLE,
                 lookups=(Lookup("sku", by="sku_code"),), columns=(
    Column("item_id", "bigint", Copy(ITEM, "id")),
    Column("order_no", "varchar(32)", Copy(ITEM, "order_no")),
    Column("line_no", "int", Copy(ITEM, "line_no")),
    Column("store_code", "varchar(32)", Parent("store_code")),
    Column("biz_date", "date", Parent("biz_date")),
    Column("sku_code", "varchar(32)", Copy(ITEM, "sku_code")),
    Column("barcode", "varchar(32)", Copy(ITEM, "barcode")),
    Column("sku_name", "varchar(128)", Looked("sku", "sku_name")),
    Column("category", "varchar(64)", Looked("sku", "category")),
    Column("quantity", "decimal(12,3)", Copy(ITEM, "quantity")),
    Column("price", "money", Copy(ITEM, "price")),
    Column("sale_price", "money", Copy(ITEM, "sale_price")),
    Column("discount_amount", "money", Copy(ITEM, "discount_amount")),
    Column("amount", "money", Copy(ITEM, "amount")),
    Column("refund_quantity", "decimal(12,3)", Sum(ITEM_REFUND, "refund_quantity", through=_REFUNDED_LINE,
                                                   per_row="item_id")),
    Column("refund_amount", "money", Sum(ITEM_REFUND, "refund_amount", through=_REFUNDED_LINE, per_row="item_id")),
    Column("order_status", "tinyint", Parent("order_status")),
))

_LEDGER = Retraction("ads_pos_order_ledger")
#: A sale contributes once paid and while not voided, on the day it was paid.
_CONTRIBUTES = (Where("pay_time", "not null"), Where("order_status", "!=", VOIDED), Where("biz_date", "not null"))

POS = FlowDeclaration(
    name="pos",
    entity_prefix="pos:",
    description="Till sales and refunds of the POS centre (source database gqsh_pos)",
    databases=("gqsh_pos",),
    sources=SOURCES,
    dimensions=(STORE, SKU),
    raises=RAISES,
    operations=OPERATIONS,
    wide=(HEADER, LINE),
    snapshots=Snapshots("dwd_gqsh_pos_order_snapshot", (HEADER_TABLE, LINE_TABLE)),
    aggregates=(
        Aggregate("ads_pos_order_sales", HEADER_TABLE, ("biz_date", "store_code"), (
            Measure("order_count"), Measure("pay_amount", "pay_amount"), Measure("refund_amount", "refund_amount"),
            Measure("net_amount", "pay_amount", less="refund_amount")), _CONTRIBUTES, _LEDGER),
        Aggregate("ads_pos_order_item_sales", LINE_TABLE, ("biz_date", "store_code", "sku_code"), (
            Measure("quantity", "quantity"), Measure("amount", "amount"),
            Measure("refund_quantity", "refund_quantity"), Measure("refund_amount", "refund_amount")),
            _CONTRIBUTES, _LEDGER),
    ),
    index=IndexDocument(
        "tdc-orders-pos", ("order_no", "store_code", "store_name", "city", "region", "pos_no", "shift_no",
                           "cashier_id", "cashier_name", "member_id", "order_status", "item_count", "total_amount",
                           "discount_amount", "pay_amount", "pay_type", "pay_time", "order_time", "refund_amount",
                           "refund_count", "last_refund_time", "biz_date", "version", "updated_at"),
        nested={LINE_TABLE: ("item_id", "line_no", "sku_code", "barcode", "sku_name", "category", "quantity",
                             "price", "sale_price", "discount_amount", "amount", "refund_quantity", "refund_amount")},
        nested_as="items", text=("store_name", "cashier_name", "items.sku_name"), newest_by="order_time",
        amount="pay_amount", day="biz_date",
        conditions={"store_id": "store_code", "status": "order_status", "member_id": "member_id",
                    "sku_id": "items.sku_code"}),
)
