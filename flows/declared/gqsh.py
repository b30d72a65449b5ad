"""``gqsh``: the online order flow of the order centre (DESIGN sections 2-4): orders, their lines,
extension, after-sales and performance records from the source database ``gqsh``, and the
payment system's writes."""

from __future__ import annotations

from flows.declaration import (
    Aggregate,
    AnyOf,
    Bookkeeping,
    Business,
    BusinessDay,
    Chosen,
    Column,
    Copy,
    DetailsSum,
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
    RowsCounted,
    Snapshots,
    Source,
    Status,
    Sum,
    Through,
    ValueMatched,
    Where,
    WideTable,
)
from flows.declared.dimensions import SKU, STORE

#: Order status codes of ``gqsh_order.status``.
SUBMITTED, PAID, DELIVERED, COMPLETED, CANCELLED = 10, 20, 30, 40, 50
#: After-sales status codes: only REFUNDED moves money.
APPLIED, REFUNDED, REJECTED = 10, 20, 30


class Op:
    """The operations of the flow."""

    SUBMIT, PAY, DELIVER, COMPLETE, REFUND, CANCEL = "SUBMIT", "PAY", "DELIVER", "COMPLETE", "REFUND", "CANCEL"

HEADER, ITEM, EXT = "gqsh_order", "gqsh_order_item", "gqsh_order_ext"
AFTER_SALES, AFTER_SALES_DTL, PERF, PAYMENT = (
    "gqsh_order_after_sales", "gqsh_order_after_sales_dtl", "perf_record", "payment")

_HEADER_COLUMNS = {
    "order_id": "varchar(64)", "store_id": "varchar(32)", "member_id": "varchar(32)", "channel": "varchar(16)",
    "status": "int", "item_count": "int", "total_amount": "money", "discount_amount": "money",
    "pay_amount": "money", "created_at": "datetime(3)", "paid_at": "datetime(3)", "updated_at": "timestamp(3)"}
#: The status decides which operations a header raises, the payment write gives the payment
#: time: SUBMIT reads the rest of the header, PAY the amount its payment must match.
_SUBMIT_READS = tuple(name for name in _HEADER_COLUMNS if name not in ("status", "paid_at", "updated_at"))

SOURCES = (
    Source(HEADER, key=("order_id",), entity_key="order_id", columns=_HEADER_COLUMNS, settled_at="paid_at",
           reads={Op.SUBMIT: _SUBMIT_READS, Op.PAY: ("pay_amount",), Op.DELIVER: (), Op.COMPLETE: (),
                  Op.CANCEL: ()}),
    Source(ITEM, key=("item_id",), entity_key="order_id", columns={
        "item_id": "bigint", "order_id": "varchar(64)", "sku_id": "varchar(32)", "quantity": "int",
        "unit_price": "money", "amount": "money"}),
    Source(EXT, key=("order_id",), entity_key="order_id", columns={
        "order_id": "varchar(64)", "delivery_type": "varchar(32)", "city": "varchar(64)", "remark": "varchar(255)"}),
    Source(AFTER_SALES, key=("after_sales_id",), entity_key="order_id", columns={
        "after_sales_id": "varchar(64)", "order_id": "varchar(64)", "status": "int", "refund_amount": "money",
        "reason": "varchar(255)", "created_at": "datetime(3)", "updated_at": "datetime(3)"}),
    Source(AFTER_SALES_DTL, key=("id",), entity_key="order_id", columns={
        "id": "bigint", "after_sales_id": "varchar(64)", "order_id": "varchar(64)", "item_id": "bigint",
        "refund_quantity": "int", "refund_amount": "money"}),
    Source(PERF, key=("id",), entity_key="order_id", columns={
        "id": "bigint", "order_id": "varchar(64)", "staff_id": "varchar(32)", "perf_amount": "money"}),
)

PAID_OR_LATER = (PAID, DELIVERED, COMPLETED)
RAISES = (
    Raise(HEADER, (Op.SUBMIT,), when=(Where("status", "in", (SUBMITTED, *PAID_OR_LATER, CANCELLED)),)),
    Raise(HEADER, (Op.PAY,), when=(Where("status", "in", PAID_OR_LATER),)),
    Raise(HEADER, (Op.DELIVER,), when=(Where("status", "=", DELIVERED),)),
    Raise(HEADER, (Op.COMPLETE,), when=(Where("status", "=", COMPLETED),)),
    Raise(HEADER, (Op.CANCEL,), when=(Where("status", "=", CANCELLED),)),
    Raise(ITEM, (Op.SUBMIT,)),
    Raise(EXT, (Op.SUBMIT,)),
    Raise(AFTER_SALES, (Op.REFUND,)),
    Raise(AFTER_SALES_DTL, (Op.REFUND,)),
    Raise(PERF, (Op.COMPLETE,)),
)

OPERATIONS = (
    Operation(Op.SUBMIT, status=10, complete_when=(RowArrived(HEADER), RowsCounted(ITEM, HEADER, "item_count"))),
    Operation(Op.PAY, after=(Op.SUBMIT,), status=20, complete_when=(
        RowArrived(HEADER, when=(Where("status", "in", PAID_OR_LATER),)), RowArrived(PAYMENT),
        ValueMatched(PAYMENT, "paid_amount", HEADER, "pay_amount"))),
    Operation(Op.DELIVER, after=(Op.PAY,), status=30, complete_when=(
        RowArrived(HEADER, when=(Where("status", "in", (DELIVERED, COMPLETED)),)),)),
    Operation(Op.COMPLETE, after=(Op.PAY,), status=40, complete_when=(
        RowArrived(HEADER, when=(Where("status", "=", COMPLETED),)),)),
    Operation(Op.REFUND, after=(Op.PAY,), complete_when=(
        DetailsSum(AFTER_SALES_DTL, "refund_amount", AFTER_SALES, "refund_amount", link="after_sales_id",
                   when=(Where("status", "=", REFUNDED),)),)),
    Operation(Op.CANCEL, after=(Op.SUBMIT,), illegal_after=(Op.PAY,), status=50, complete_when=(
        RowArrived(HEADER, when=(Where("status", "=", CANCELLED),)),)),
)

_REFUNDED = (Where("status", "=", REFUNDED),)
_REFUNDED_DETAIL = Through(AFTER_SALES, "after_sales_id", _REFUNDED)


def _payment(column: str) -> Chosen:
    """The payment a merge takes: the newest whose paid_amount equals pay_amount, else the newest."""
    return Chosen(PAYMENT, column, newest_by="paid_at", match=("paid_amount", "pay_amount"))


#: What search reads by (``search.sql``: a store's days, a member's orders, newest first) and
#: reconciliation (a day's orders).
_ORDER_INDEXES = {"ix_dwd_order_store_day": ("store_id", "biz_date"), "ix_dwd_order_member": ("member_id",),
                  "ix_dwd_order_created": ("created_at",), "ix_dwd_order_biz_date": ("biz_date",)}
ORDER = WideTable("dwd_order", key=("order_id",), lookups=(Lookup("store", by="store_id", refreshes=True),),
                  indexes=_ORDER_INDEXES, columns=(
    Column("order_id", "varchar(64)", Copy(HEADER, "order_id")),
    Column("store_id", "varchar(32)", Copy(HEADER, "store_id")),
    Column("store_name", "varchar(128)", Looked("store", "store_name")),
    Column("city", "varchar(64)", Looked("store", "city")),
    Column("region", "varchar(64)", Looked("store", "region")),
    Column("member_id", "varchar(32)", Copy(HEADER, "member_id")),
    Column("channel", "varchar(16)", Copy(HEADER, "channel")),
    Column("status", "int", Status()),
    Column("item_count", "int", Copy(HEADER, "item_count")),
    Column("total_amount", "money", Copy(HEADER, "total_amount")),
    Column("discount_amount", "money", Copy(HEADER, "discount_amount")),
    Column("pay_amount", "money", Copy(HEADER, "pay_amount")),
    Column("pay_channel", "varchar(32)", _payment("pay_channel")),
    Column("pay_txn_id", "varchar(64)", _payment("pay_txn_id")),
    Column("paid_at", "datetime(3)", _payment("paid_at")),
    Column("delivery_type", "varchar(32)", Copy(EXT, "delivery_type")),
    Column("refund_amount", "money", Sum(AFTER_SALES, "refund_amount", when=_REFUNDED)),
    Column("refund_count", "int", Sum(AFTER_SALES, None, when=_REFUNDED)),
    Column("perf_staff_id", "varchar(32)", Copy(PERF, "staff_id")),
    Column("perf_amount", "money", Sum(PERF, "perf_amount", null_when_empty=True)),
    Column("created_at", "datetime(3)", Copy(HEADER, "created_at")),
    Column("biz_date", "date", BusinessDay(("paid_at", "created_at"))),
    Column("last_operation", "varchar(16)", Bookkeeping("last_operation")),
    Column("version", "int", Bookkeeping("version")),
    Column("updated_at", "datetime(3)", Bookkeeping("updated_at")),
    Column("source_digest", "bigint", Bookkeeping("source_digest")),
))

ORDER_ITEM = WideTable(
    "dwd_order_item", key=("item_id",), rows_from=ITEM, parent="dwd_order", lookups=(Lookup("sku", by="sku_id"),),
    # A day's lines (reconciliation), the orders with a line of a SKU (search).
    indexes={"ix_dwd_order_item_order_id": ("order_id",), "ix_dwd_order_item_biz_date": ("biz_date",),
             "ix_dwd_order_item_sku_id": ("sku_id",)},
    columns=(
        Column("item_id", "bigint", Copy(ITEM, "item_id")),
        Column("order_id", "varchar(64)", Copy(ITEM, "order_id")),
        Column("store_id", "varchar(32)", Parent("store_id")),
        Column("biz_date", "date", Parent("biz_date")),
        Column("sku_id", "varchar(32)", Copy(ITEM, "sku_id")),
        Column("sku_name", "varchar(128)", Looked("sku", "sku_name")),
        Column("category", "varchar(64)", Looked("sku", "category")),
        Column("quantity", "int", Copy(ITEM, "quantity")),
        Column("unit_price", "money", Copy(ITEM, "unit_price")),
        Column("amount", "money", Copy(ITEM, "amount")),
        Column("refund_quantity", "int", Sum(AFTER_SALES_DTL, "refund_quantity", through=_REFUNDED_DETAIL,
                                             per_row="item_id")),
        Column("refund_amount", "money", Sum(AFTER_SALES_DTL, "refund_amount", through=_REFUNDED_DETAIL,
                                             per_row="item_id")),
        Column("status", "int", Parent("status")),
    ))

#: Retraction: the ledger keeps each order's last contribution and the wide-row version behind it.
_LEDGER = Retraction("ads_order_ledger")
#: An order contributes once its payment is merged and while it is not cancelled.
_CONTRIBUTES = (Where("paid_at", "not null"), Where("status", "!=", CANCELLED), Where("biz_date", "not null"),
                Where("store_id", "not null"))
_ORDER_MEASURES = (Measure("order_count"), Measure("pay_amount", "pay_amount"),
                   Measure("refund_amount", "refund_amount"), Measure("net_amount", "pay_amount", less="refund_amount"))

AGGREGATES = (
    Aggregate("ads_order_sales", "dwd_order", ("biz_date", "store_id"), _ORDER_MEASURES, _CONTRIBUTES, _LEDGER),
    Aggregate("ads_order_item_sales", "dwd_order_item", ("biz_date", "sku_id"), (
        Measure("quantity", "quantity"), Measure("amount", "amount"), Measure("refund_quantity", "refund_quantity"),
        Measure("refund_amount", "refund_amount")), _CONTRIBUTES, _LEDGER),
    Aggregate("ads_order_sales_sum", "dwd_order", ("biz_date",), _ORDER_MEASURES, _CONTRIBUTES, _LEDGER),
)

_ITEM_FIELDS = ("item_id", "sku_id", "sku_name", "category", "quantity", "unit_price", "amount", "refund_quantity",
                "refund_amount", "status")
_ORDER = "dwd_order."

#: A paid order: its payment merged, not cancelled (what a line's PayOrderDetail and a member's
#: first consumption need).
_PAID = (Where("paid_at", "not null"), Where("status", "!=", CANCELLED))
_ORDER_ID = _ORDER + "order_id"
EVENTS = (
    # One per line of a paid order.
    PublishedEvent("PayOrderDetail", "dwd_order_item", key=(_ORDER_ID, "item_id"), when=_PAID, fields=(
        *(_ORDER + name for name in ("store_id", "member_id", "channel", "biz_date", "paid_at", "pay_channel",
                                     "pay_txn_id", "total_amount", "discount_amount", "pay_amount")),
        "item_id", "sku_id", "quantity", "unit_price", "amount")),
    # One per cancelled order.
    PublishedEvent("CancelOrder", "dwd_order", key=("order_id",), when=(Where("status", "=", CANCELLED),),
                   fields=("store_id", "member_id", "channel", "biz_date", "created_at", "item_count",
                           "total_amount", "pay_amount")),
    # One per line with anything refunded: what of it was returned so far (refunds are kept per line).
    PublishedEvent("ApplyReturn", "dwd_order_item", key=(_ORDER_ID, "item_id"),
                   row_when=(AnyOf((Where("refund_quantity", ">", 0), Where("refund_amount", ">", 0))),), fields=(
        *(_ORDER + name for name in ("store_id", "member_id", "channel", "biz_date")),
        "item_id", "sku_id", "quantity", "amount", "refund_quantity", "refund_amount")),
    # A member's first paid order in a channel, chosen from all of them (the tables older
    # warehouses hold).
    PublishedEvent("FirstConsumeDate", "dwd_order", key=("member_id", "channel"),
                   when=(*_PAID, Where("member_id", "not null"), Where("member_id", "!=", "")),
                   fields=("member_id", "channel", Field("first_paid_at", "paid_at"), Field("first_date", "biz_date"),
                           "order_id", "store_id"),
                   first=FirstOf(by="paid_at", table="first_consume", entities="first_consume_order")),
)

GQSH = FlowDeclaration(
    name="gqsh",
    description="Online orders of the order centre (source database gqsh) and their payments",
    databases=("gqsh",),
    sources=SOURCES,
    business=(Business(PAYMENT, operations=(Op.PAY,), payload={
        "pay_txn_id": "varchar(64)", "pay_channel": "varchar(32)", "paid_amount": "money",
        "paid_at": "datetime(3)"}),),
    dimensions=(STORE, SKU),
    raises=(*RAISES, Raise(PAYMENT, (Op.PAY,), changes=("insert",))),
    operations=OPERATIONS,
    wide=(ORDER, ORDER_ITEM),
    snapshots=Snapshots("dwd_order_snapshot", ("dwd_order", "dwd_order_item")),
    aggregates=AGGREGATES,
    index=IndexDocument(
        "tdc-orders", tuple(c.name for c in ORDER.columns if c.name != "source_digest"),
        nested={"dwd_order_item": _ITEM_FIELDS}, nested_as="items", text=("store_name", "items.sku_name"),
        newest_by="created_at", amount="pay_amount", day="biz_date",
        conditions={"store_id": "store_id", "status": "status", "member_id": "member_id", "channel": "channel",
                    "sku_id": "items.sku_id"}),
    events=EVENTS,
)
