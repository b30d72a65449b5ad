"""Warehouse (DWS) tables: the de-duplicated daily ADS aggregates of DESIGN section 4, the
ledger of what each order last contributed to them, and the offline copies of the flows'
dimension tables that the T+1 reload reads."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import BigInteger, Column, Date, Integer, String, Table, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from flows import SourceTable
from flows.registry import ACCEPTED
from models.types import Money, Timestamp, column_sql_type


class WarehouseBase(DeclarativeBase):
    """Declarative base of the warehouse tables."""


class AdsOrderSales(WarehouseBase):
    __tablename__ = "ads_order_sales"

    biz_date: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    store_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    order_count: Mapped[int] = mapped_column(Integer, default=0)
    pay_amount: Mapped[Decimal] = mapped_column(Money, default=Decimal("0.00"))
    refund_amount: Mapped[Decimal] = mapped_column(Money, default=Decimal("0.00"))
    net_amount: Mapped[Decimal] = mapped_column(Money, default=Decimal("0.00"))


class AdsOrderItemSales(WarehouseBase):
    __tablename__ = "ads_order_item_sales"

    biz_date: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    sku_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    quantity: Mapped[int] = mapped_column(Integer, default=0)
    amount: Mapped[Decimal] = mapped_column(Money, default=Decimal("0.00"))
    refund_quantity: Mapped[int] = mapped_column(Integer, default=0)
    refund_amount: Mapped[Decimal] = mapped_column(Money, default=Decimal("0.00"))


class AdsOrderSalesSum(WarehouseBase):
    __tablename__ = "ads_order_sales_sum"

    biz_date: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    order_count: Mapped[int] = mapped_column(Integer, default=0)
    pay_amount: Mapped[Decimal] = mapped_column(Money, default=Decimal("0.00"))
    refund_amount: Mapped[Decimal] = mapped_column(Money, default=Decimal("0.00"))
    net_amount: Mapped[Decimal] = mapped_column(Money, default=Decimal("0.00"))


class AdsOrderLedger(WarehouseBase):
    """What each order last added to the aggregates, and from which version of its wide row.

    Updated in the same transaction as the aggregates, so (new - old) is applied exactly once.
    """

    __tablename__ = "ads_order_ledger"

    order_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: ``dwd_order.version`` the contribution was computed from; 0 before the first.
    wide_version: Mapped[int] = mapped_column(Integer, default=0)
    #: The day the contribution is on (None: the order contributes nothing).
    biz_date: Mapped[dt.date | None] = mapped_column(Date, index=True)
    contribution: Mapped[str | None] = mapped_column(Text)
    #: The largest fencing token of a chain that wrote this order's contribution (NULL: none yet).
    fence: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)


def _offline_dimension_table(source: SourceTable) -> Table:
    columns = [Column(name, column_sql_type(kind), primary_key=name == source.key, nullable=name != source.key)
               for name, kind in source.types.items()]
    # When the row last changed at the source: the reload never overwrites a newer CDC value.
    columns.append(Column("updated_at", Timestamp, nullable=False))
    return Table(source.name, WarehouseBase.metadata, *columns)


#: Dimension name -> (its source table declaration, the warehouse table the T+1 reload reads).
OFFLINE_DIMENSIONS: dict[str, tuple[SourceTable, Table]] = {
    source.dimension: (source, _offline_dimension_table(source))
    for source in ACCEPTED.tables.values() if source.dimension is not None
}
