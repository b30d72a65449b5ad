"""The normalised input shapes and the error that quarantines bad input."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from inputs.positions import Position

ChangeKind = Literal["insert", "update", "delete"]


class BadInput(ValueError):
    """Input tdc cannot accept; ``reason`` says precisely why, ``order_id`` is set when known."""

    def __init__(self, reason: str, order_id: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.order_id = order_id


@dataclass(frozen=True)
class ChangeEvent:
    """One row change of a source table, whatever reader it came through, at the strongest
    position that reader gives (``inputs.positions``)."""

    database: str
    table: str
    kind: ChangeKind
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    primary_key: tuple[str, ...]
    position: Position

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
    #: As the writer sent it; read (in the source time zone when it has no offset) by routing.
    occurred_at: Any = None


@dataclass(frozen=True)
class SchemaChange:
    """A DDL statement (or a TRUNCATE) seen on a source table; recorded and alarmed, never
    applied to rows."""

    database: str
    table: str
    sql: str
    position: Position


@dataclass(frozen=True)
class Ignored:
    """A valid message with nothing for tdc to store: ``why`` names the kind (a transaction
    marker, a heartbeat, a rows-query entry, a table no flow follows), for the counts."""

    why: str


Parsed = ChangeEvent | BusinessWrite | SchemaChange | Ignored


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
