"""Warehouse (DWS) tables: the de-duplicated daily ADS aggregates of DESIGN section 4."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import Date, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from models.types import Money


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
