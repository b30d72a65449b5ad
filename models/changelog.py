"""The changelog outbox of the wide rows (shard databases); the first-of events' warehouse tables
are ``models.firsts``.

A ``changelog_outbox`` row is written by the merge, in the transaction that writes the wide row
(``record_changes``), when a changelog or events sink is configured; the relay
(``streams.outbox``) publishes it and marks it, and it is purged after the retention period.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, Protocol, cast

from sqlalchemy import Connection, Index, Integer, String, Table, Text, UniqueConstraint, insert
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import Mapped, mapped_column

from models.digests import kind_of
from models.firsts import FIRST_TABLES
from models.orders import ShardBase
from models.types import BigId, Timestamp
from models.wide import SCHEMAS

#: An image of an order with a few lines is 1-3 kB; MySQL's TEXT stops at 64 kB, MEDIUMTEXT at 16 MB.
Image = Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")


class ChangelogOutbox(ShardBase):
    """One committed change of an order's wide rows, waiting for the relay (``published_at``
    NULL) or published to every configured sink and kept until the retention period ends.  Each
    sink is marked on its own (``changelog_published_at``, ``events_published_at``), so one sink
    that is away neither holds back nor repeats the other."""

    __tablename__ = "changelog_outbox"
    __table_args__ = (UniqueConstraint("order_id", "version", name="uq_changelog_order_version"),
                      # Status and the purge (published before).
                      Index("ix_changelog_published", "published_at", "id"),
                      # Each sink's read (not yet published to it, oldest first), even when the
                      # other sink is away and rows it has not taken pile up.
                      Index("ix_changelog_changes_waiting", "published_at", "changelog_published_at", "id"),
                      Index("ix_changelog_events_waiting", "published_at", "events_published_at", "id"))

    #: Order of writing within the database: per order, the order of versions (a writer of an
    #: order inserts only after the previous writer of that order committed: the optimistic lock).
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    order_id: Mapped[str] = mapped_column(String(64))
    #: ``dwd_order.version`` after the change.
    version: Mapped[int] = mapped_column(Integer)
    #: insert (the order's first wide row) or update.
    operation: Mapped[str] = mapped_column(String(8))
    #: The business operations merged in the change, comma-separated (PAY or SUBMIT,PAY...).
    operations: Mapped[str] = mapped_column(String(128))
    #: JSON ``{"order": {...}, "items": [...]}`` before the change (NULL for an insert) and after it.
    before_image: Mapped[str | None] = mapped_column(Image)
    after_image: Mapped[str] = mapped_column(Image)
    changed_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    #: When every configured sink had it (what the purge and ``tdc outbox status`` go by).
    published_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    #: When the changelog sink confirmed it, and the events sink its events.  NULL in rows an
    #: older tdc kept (``tdc init`` adds the columns): those have ``published_at`` when published.
    changelog_published_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    events_published_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)


CHANGELOG = cast(Table, ChangelogOutbox.__table__)
#: The online orders' first consumptions (``FirstConsumeDate``), as older code names their tables.
FIRST_CONSUME, FIRST_CONSUME_ORDERS = FIRST_TABLES["FirstConsumeDate"].first, FIRST_TABLES["FirstConsumeDate"].entities
CENT = Decimal("0.01")
#: A column of an image: its name, its kind (``models.digests.kind_of``), its decimal places.
ImageColumn = tuple[str, str, int]


def _image_columns(table: Table | None) -> tuple[ImageColumn, ...]:
    """The columns of an image and how each is written: the wide row's, without the
    reconciliation digest (bookkeeping the row's readers never see)."""
    if table is None:
        return ()
    return tuple((c.name, kind_of(c), getattr(c.type, "scale", None) or 2) for c in table.columns
                 if c.name != "source_digest")


#: Flow -> its root's and its child's image columns, and the child's key.
IMAGES: dict[str, tuple[tuple[ImageColumn, ...], tuple[ImageColumn, ...], str | None]] = {
    name: (_image_columns(schema.root), _image_columns(schema.child), schema.child_key)
    for name, schema in SCHEMAS.items()}


class WideChange(Protocol):
    """What the merge knows of one entity it wrote (``chain.wide_rows.Merge``)."""

    @property
    def order_id(self) -> str: ...
    @property
    def flow_name(self) -> str: ...
    @property
    def order(self) -> dict[str, Any]: ...
    @property
    def items(self) -> dict[int, dict[str, Any]]: ...
    @property
    def current(self) -> dict[str, Any] | None: ...
    @property
    def current_items(self) -> dict[int, dict[str, Any]]: ...
    @property
    def snapshots(self) -> list[dict[str, Any]]: ...


def image_value(kind: str, value: Any, places: int = 2) -> Any:
    """A value of a column of ``kind`` (``models.digests.kind_of``) as images hold it, whatever
    the backend returned or the merge computed: amounts as a string with the column's decimal
    places (two for money), times in UTC to the millisecond (what ``Timestamp`` keeps on every
    backend), days as ``YYYY-MM-DD``."""
    if value is None:
        return None
    if kind == "money":
        return str(Decimal(str(value)).quantize(CENT if places == 2 else Decimal(1).scaleb(-places)))
    if kind == "time":
        moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
        return moment.isoformat(timespec="milliseconds")
    if kind == "date":
        day = value.date() if isinstance(value, dt.datetime) else value
        return day.isoformat() if isinstance(day, dt.date) else str(day)[:10]
    return int(value) if kind == "int" else value


def image(order: Mapping[str, Any], items: Iterable[Mapping[str, Any]], flow: str) -> dict[str, Any]:
    """An entity's wide rows as JSON-ready data: ``{"order": {root row}, "items": [child rows
    by key]}`` (the online order flow's names, for every flow).  Also how a reader compares the
    wide rows with a change's after-image.  ``flow``: the flow's name."""
    root, child, key = IMAGES[flow]
    return {"order": {name: image_value(kind, order.get(name), places) for name, kind, places in root},
            "items": [{name: image_value(kind, item.get(name), places) for name, kind, places in child}
                      for item in sorted(items, key=lambda item: item[key])] if key else []}


def record_changes(connection: Connection, changes: Iterable[WideChange]) -> None:
    """Write one outbox row per changed order, on ``connection`` (the transaction that writes the
    wide rows, after their versions are set)."""
    rows = [dict(order_id=change.order_id, version=change.order["version"],
                 operation="insert" if change.current is None else "update",
                 operations=",".join(dict.fromkeys(s["operation_type"] for s in change.snapshots))[:128],
                 before_image=None if change.current is None else json.dumps(
                     image(change.current, change.current_items.values(), change.flow_name), separators=(",", ":")),
                 after_image=json.dumps(image(change.order, change.items.values(), change.flow_name),
                                        separators=(",", ":")),
                 changed_at=change.order["updated_at"], published_at=None)
            for change in changes]
    if rows:
        connection.execute(insert(CHANGELOG), rows)
