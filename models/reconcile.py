"""Reconciliation runs, the differences they found and what they did about them (warehouse).

Runs are kept: the last ones feed the trend in every report."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Boolean, Date, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.types import BigId, Timestamp
from models.warehouse import WarehouseBase


class ReconcileRun(WarehouseBase):
    """One ``tdc reconcile``: its range, what it compared, found and fixed, and its reports."""

    __tablename__ = "reconcile_run"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    started_at: Mapped[dt.datetime] = mapped_column(Timestamp, index=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    date_from: Mapped[dt.date] = mapped_column(Date)
    date_to: Mapped[dt.date] = mapped_column(Date)
    layers: Mapped[str] = mapped_column(String(64))
    fix: Mapped[bool] = mapped_column(Boolean, default=False)
    #: running, clean (nothing differed), fixed (everything found was fixed), different, error.
    status: Mapped[str] = mapped_column(String(16))
    #: JSON: per layer, what was compared (orders, buckets, cells) and how much differed.
    counts: Mapped[str | None] = mapped_column(Text)
    found: Mapped[int] = mapped_column(Integer, default=0)
    fixed: Mapped[int] = mapped_column(Integer, default=0)
    remaining: Mapped[int] = mapped_column(Integer, default=0)
    duration_ms: Mapped[int | None] = mapped_column(BigInteger)
    json_path: Mapped[str | None] = mapped_column(String(1024))
    html_path: Mapped[str | None] = mapped_column(String(1024))
    error: Mapped[str | None] = mapped_column(Text)


class ReconcileDiff(WarehouseBase):
    """One difference: an order's row or column, or an aggregate cell, as expected and as found."""

    __tablename__ = "reconcile_diff"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("reconcile_run.id", ondelete="CASCADE"), index=True)
    layer: Mapped[str] = mapped_column(String(16))
    biz_date: Mapped[dt.date | None] = mapped_column(Date)
    order_id: Mapped[str | None] = mapped_column(String(64))
    #: The row: ``dwd_order``, ``dwd_order_item 123`` or an ADS cell such as ``ads_order_sales 2026-01-01 S01``.
    target: Mapped[str] = mapped_column(String(255))
    #: The column that differs, or ``*`` for a row that is missing or not expected.
    column_name: Mapped[str] = mapped_column(String(64))
    expected: Mapped[str | None] = mapped_column(Text)
    found: Mapped[str | None] = mapped_column(Text)
    bucket: Mapped[str | None] = mapped_column(String(64))
    #: Whether the same comparison after the fix no longer finds it.
    fixed: Mapped[bool] = mapped_column(Boolean, default=False)


class ReconcileAction(WarehouseBase):
    """What ``--fix`` did: an order sent round the chain again, an ADS day rebuilt; and how it ended."""

    __tablename__ = "reconcile_action"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("reconcile_run.id", ondelete="CASCADE"), index=True)
    layer: Mapped[str] = mapped_column(String(16))
    #: ``rerun`` (the order's operations go round the chain again), ``rebuild`` (an ADS day), ``none``.
    action: Mapped[str] = mapped_column(String(16))
    order_id: Mapped[str | None] = mapped_column(String(64))
    biz_date: Mapped[dt.date | None] = mapped_column(Date)
    detail: Mapped[str] = mapped_column(Text)
    #: done, failed, timed out (still running when the run ended).
    result: Mapped[str] = mapped_column(String(16))
    at: Mapped[dt.datetime] = mapped_column(Timestamp)
