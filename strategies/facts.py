"""What tdc knows about one order: the newest live version of every source row and write, and
which rows are gone (their newest record is a delete)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from inputs.positions import Position, compare, decode


@dataclass
class OrderFacts:
    """Rows by source and unique key; a delete removes the row, the newest position wins."""

    order_id: str
    rows: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    #: Source -> the unique keys of its rows whose newest record is a delete (tombstones).
    gone: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def from_metadata(cls, order_id: str, metadata: Iterable[Mapping[Any, Any]]) -> OrderFacts:
        newest: dict[tuple[str, str], tuple[Position, Mapping[Any, Any]]] = {}
        for record in metadata:
            slot = (record["source"], record["unique_key"])
            position = decode(record["position"])
            if slot not in newest or compare(position, newest[slot][0])[0] > 0:
                newest[slot] = (position, record)
        facts = cls(order_id)
        for (source, unique_key), (_, record) in newest.items():
            if record["kind"] != "delete":
                facts.rows.setdefault(source, {})[unique_key] = json.loads(record["content"])
            else:
                facts.gone.setdefault(source, set()).add(unique_key)
        return facts

    def deleted(self, source: str) -> bool:
        """Whether the entity's row of ``source`` is gone: a delete is the newest record of a row
        of it, and no row of it is live (a header deleted, not one of several rows)."""
        return bool(self.gone.get(source)) and not self.rows.get(source)

    def one(self, source: str) -> dict[str, Any] | None:
        """The row of a one-per-order source (the header, its extension)."""
        rows = self.rows.get(source)
        if not rows:
            return None
        return rows[min(rows)]

    def all(self, source: str) -> list[dict[str, Any]]:
        """All live rows of ``source`` in unique-key order."""
        rows = self.rows.get(source, {})
        return [rows[key] for key in sorted(rows, key=_natural)]


def _natural(key: str) -> tuple[int, str]:
    return (int(key), "") if key.isdigit() else (0, key)
