"""What tdc knows about one order, and what is in quarantine: read straight from storage, for
``tdc order show``, ``tdc quarantine list`` and the console's lineage and quarantine pages."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from chain.task_state import load_facts, order_tasks
from chain.wide_rows import read_wide_rows
from flows.registry import flow_of
from inputs.positions import decode
from models.orders import FailedTask, QuarantinedInput
from models.storage import Storage
from models.wide import schema_of


def order_lineage(storage: Storage, order_id: str) -> dict[str, Any]:
    """Metadata by source, tasks, snapshots, wide rows, quarantined input and failures of one order."""
    shard = storage.shard_of(order_id)
    with storage.read_engine_for_order(order_id).connect() as connection:
        _, metadata = load_facts(connection, shard, order_id)
        tasks = order_tasks(connection, shard, order_id)
        order, items = read_wide_rows(connection, order_id)
        schema = schema_of(flow_of(order_id))
        table = schema.snapshots
        snapshots: list[Any] = [] if table is None else list(
            connection.execute(select(table).where(table.c.order_id == order_id)))
        quarantined = connection.execute(
            select(QuarantinedInput.__table__).where(QuarantinedInput.order_id == order_id))
        failures = connection.execute(select(FailedTask.__table__).where(FailedTask.order_id == order_id))
        return {
            "order_id": order_id,
            "shard": shard,
            "database": storage.database_of(order_id),
            "metadata": [
                {k: row._mapping[k] for k in ("operation_type", "source", "unique_key", "kind", "position",
                                              "input_format", "updated_at")}
                | {"at": describe_position(row.position), "content": json.loads(row.content)}
                for row in sorted(metadata, key=lambda r: (r.source, r.unique_key, r.operation_type))
            ],
            "tasks": [
                {k: row._mapping[k] for k in ("operation_type", "status", "version", "done_version", "attempts",
                                              "next_run_at", "last_error")}
                | {"history": json.loads(row.history or "[]")}
                for row in tasks
            ],
            "snapshots": [
                {"operation_type": s.operation_type, "task_version": s.task_version, "taken_at": s.taken_at,
                 "order_row": json.loads(s.order_row)}
                for s in snapshots
            ],
            # The entity's root wide row and child rows (under the online order flow's names,
            # which readers of this JSON know), and the names of the tables they are in.
            "flow": schema.flow.name,
            "root_table": schema.root.name,
            "child_table": None if schema.child is None else schema.child.name,
            "dwd_order": order,
            "dwd_order_item": list(items.values()),
            "quarantine": [dict(q._mapping) for q in quarantined],
            "failed": [dict(f._mapping) for f in failures],
        }


def describe_position(stored: str) -> str:
    """A stored position for people (``gtid …:42, binlog 3:4015 on server 1, 2026-…Z``)."""
    try:
        return decode(stored).describe()
    except ValueError:
        return stored


def attempt_line(attempt: dict[str, Any]) -> str:
    """One entry of a task's attempt history, as `order show` and `failed show` print it."""
    return f"{attempt['at']} attempt {attempt['attempt']}: {attempt['reason']}"


def recent_quarantine(storage: Storage, limit: int = 50) -> list[dict[str, Any]]:
    """The newest ``limit`` quarantined inputs over every shard database, newest first."""
    entries: list[dict[str, Any]] = []
    for database in storage.distinct_databases():
        with storage.read_engine(database).connect() as connection:
            query = select(QuarantinedInput.__table__).order_by(QuarantinedInput.id.desc()).limit(limit)
            entries += [dict(row._mapping) for row in connection.execute(query)]
    entries.sort(key=lambda e: e["received_at"], reverse=True)
    return entries[:limit]
