"""The normalised input shapes and the error that quarantines bad input."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal

ChangeKind = Literal["insert", "update", "delete"]


class BadInput(ValueError):
    """Input tdc cannot accept; ``reason`` says precisely why, ``order_id`` is set when known."""

    def __init__(self, reason: str, order_id: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.order_id = order_id


@dataclass(frozen=True)
class ChangeEvent:
    """One row change of a source table, whatever reader it came through.

    ``position`` sorts in commit order: 13 digits of commit milliseconds, then a reader-specific
    tie-break (binlog file and offset, Canal message id), so an older event is recognisable.
    """

    database: str
    table: str
    kind: ChangeKind
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    primary_key: tuple[str, ...]
    position: str
    committed_at: dt.datetime | None = None

    @property
    def row(self) -> dict[str, Any]:
        """The row image that describes the change: after, or before for a delete."""
        image = self.before if self.kind == "delete" else self.after
        return image or {}


@dataclass(frozen=True)
class BusinessWrite:
    """A write pushed by a business system (DESIGN 2.2), such as a payment."""

    source: str
    order_id: str
    operation_type: str
    unique_key: str
    payload: dict[str, Any] = field(default_factory=dict)
    occurred_at: dt.datetime | None = None

    @property
    def position(self) -> str:
        assert self.occurred_at is not None
        return f"{epoch_millis(self.occurred_at):013d}.0"


@dataclass(frozen=True)
class SchemaChange:
    """A DDL statement seen on a source table; recorded, never applied to rows."""

    database: str
    table: str
    sql: str
    position: str


Parsed = ChangeEvent | BusinessWrite | SchemaChange


def epoch_millis(moment: dt.datetime) -> int:
    """Milliseconds since the epoch, reading a naive time as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


def require(mapping: dict[str, Any], key: str, what: str) -> Any:
    """``mapping[key]``, or BadInput naming what is missing."""
    if not isinstance(mapping, dict):
        raise BadInput(f"{what} is not a JSON object")
    if key not in mapping or mapping[key] is None:
        raise BadInput(f"{what} has no {key!r}")
    return mapping[key]
