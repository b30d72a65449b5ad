"""The reference order flow of the retail document (source database ``gqsh``, DESIGN 2.1)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flows import BusinessSource, Flow, SourceTable
from flows.state_machine import Operation as Op

#: Order status codes of ``gqsh_order.status``.
SUBMITTED, PAID, DELIVERED, COMPLETED, CANCELLED = 10, 20, 30, 40, 50
#: After-sales status codes: only REFUNDED moves money.
APPLIED, REFUNDED, REJECTED = 10, 20, 30


def header_operations(row: Mapping[str, Any]) -> tuple[str, ...]:
    """A header at a status feeds SUBMIT and the operation that status records."""
    status = row.get("status")
    return {
        SUBMITTED: (Op.SUBMIT,),
        PAID: (Op.SUBMIT, Op.PAY),
        DELIVERED: (Op.SUBMIT, Op.PAY, Op.DELIVER),
        COMPLETED: (Op.SUBMIT, Op.PAY, Op.COMPLETE),
        CANCELLED: (Op.SUBMIT, Op.CANCEL),
    }.get(status, ())  # type: ignore[arg-type]


#: Header columns no operation reads from the header: the status decides which operations a row
#: feeds, the payment write gives the payment time.
_NOT_READ = ("status", "paid_at", "updated_at")


def header_reads(operation: str, row: Mapping[str, Any]) -> Mapping[str, Any]:
    """What each operation reads of a header it is fed: SUBMIT the order's own fields; PAY the
    amount its payment must match; the others only that the status records them (the row feeds
    them at all).  So a delivery does not run SUBMIT and PAY again, and a changed member does
    not run PAY."""
    if operation == Op.SUBMIT:
        return {name: value for name, value in row.items() if name not in _NOT_READ}
    if operation == Op.PAY:
        return {"pay_amount": row.get("pay_amount")}
    return {}


def _always(*operations: str):  # type: ignore[no-untyped-def]
    return lambda row: operations


ORDER_FLOW = Flow(
    name="gqsh_order",
    databases=("gqsh",),
    tables={
        table.name: table
        for table in (
            SourceTable(
                "gqsh_order",
                key="order_id",
                columns={
                    "order_id": "varchar(64)", "store_id": "varchar(32)", "member_id": "varchar(32)",
                    "channel": "varchar(16)", "status": "int", "item_count": "int", "total_amount": "money",
                    "discount_amount": "money", "pay_amount": "money", "created_at": "datetime(3)",
                    "paid_at": "datetime(3)", "updated_at": "timestamp(3)",
                },
                operations=header_operations,
                reads=header_reads,
                settled_at="paid_at",
            ),
            SourceTable(
                "gqsh_order_item",
                key="item_id",
                columns={"item_id": "bigint", "order_id": "varchar(64)", "sku_id": "varchar(32)",
                         "quantity": "int", "unit_price": "money", "amount": "money"},
                operations=_always(Op.SUBMIT),
            ),
            SourceTable(
                "gqsh_order_ext",
                key="order_id",
                columns={"order_id": "varchar(64)", "delivery_type": "varchar(32)", "city": "varchar(64)",
                         "remark": "varchar(255)"},
                operations=_always(Op.SUBMIT),
            ),
            SourceTable(
                "gqsh_order_after_sales",
                key="after_sales_id",
                columns={"after_sales_id": "varchar(64)", "order_id": "varchar(64)", "status": "int",
                         "refund_amount": "money", "reason": "varchar(255)", "created_at": "datetime(3)",
                         "updated_at": "datetime(3)"},
                operations=_always(Op.REFUND),
            ),
            SourceTable(
                "gqsh_order_after_sales_dtl",
                key="id",
                columns={"id": "bigint", "after_sales_id": "varchar(64)", "order_id": "varchar(64)",
                         "item_id": "bigint", "refund_quantity": "int", "refund_amount": "money"},
                operations=_always(Op.REFUND),
            ),
            SourceTable(
                "perf_record",
                key="id",
                columns={"id": "bigint", "order_id": "varchar(64)", "staff_id": "varchar(32)",
                         "perf_amount": "money"},
                operations=_always(Op.COMPLETE),
            ),
            SourceTable(
                "dim_store_shop",
                key="store_id",
                columns={"store_id": "varchar(32)", "store_name": "varchar(128)", "city": "varchar(64)",
                         "region": "varchar(64)"},
                order_key=None,
                dimension="store",
            ),
            SourceTable(
                "dim_product_sku",
                key="sku_id",
                columns={"sku_id": "varchar(32)", "sku_name": "varchar(128)", "category": "varchar(64)",
                         "unit": "varchar(16)"},
                order_key=None,
                dimension="sku",
            ),
        )
    },
    business={
        "payment": BusinessSource(
            "payment",
            operations=(Op.PAY,),
            payload={"pay_txn_id": "varchar(64)", "pay_channel": "varchar(32)", "paid_amount": "money",
                     "paid_at": "datetime(3)"},
        )
    },
)
