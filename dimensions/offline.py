"""The T+1 path: reload the offline dimension tables from the warehouse into Redis.

Each entry is replaced in place only when the warehouse copy is newer than what Redis holds
(see ``dimensions.lookup``), so look-ups never miss during a reload and a rename that came
through CDC today survives yesterday's copy.  Entries the warehouse does not hold are kept:
they may be newer than its copy; deletions come through CDC.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

import redis
from sqlalchemy import Engine, select

from dimensions.lookup import apply_dimension_changes
from flows import DimensionChange, typed_row
from inputs.events import BadInput
from inputs.positions import Position, time_position
from models.warehouse import OFFLINE_DIMENSIONS

log = logging.getLogger(__name__)

#: Rows per read from the warehouse and per Redis round trip.
LOAD_CHUNK = 1000


@dataclass
class DimensionLoad:
    dimension: str
    rows: int = 0
    #: Entries replaced because the warehouse copy was newer.
    written: int = 0
    #: Rows whose values do not read as their declared types (logged, not loaded).
    rejected: int = 0


def offline_position(updated_at: dt.datetime) -> Position:
    """The position of a warehouse row: its change time alone, so a CDC change of the same
    millisecond or later is never overwritten by it."""
    return time_position(updated_at)


def load_offline_dimensions(engine: Engine, client: redis.Redis, only: str | None = None,
                            progress: Callable[[str], None] = lambda _: None) -> list[DimensionLoad]:
    """Reload every offline dimension table (or only dimension ``only``) into Redis.

    Raises KeyError for an unknown dimension name."""
    names = [only] if only is not None else list(OFFLINE_DIMENSIONS)
    loads: list[DimensionLoad] = []
    for name in names:
        source, table = OFFLINE_DIMENSIONS[name]
        load = DimensionLoad(name)
        with engine.connect() as connection:
            result = connection.execution_options(yield_per=LOAD_CHUNK).execute(
                select(table).order_by(table.c[source.key]))
            for chunk in result.partitions():
                changes: list[DimensionChange] = []
                for row in chunk:
                    values = dict(row._mapping)
                    try:
                        attributes = typed_row(source.types, values, f"{table.name} row")
                    except BadInput as error:
                        log.warning("offline %s %s not loaded: %s", name, values.get(source.key), error.reason)
                        load.rejected += 1
                        continue
                    changes.append(DimensionChange(name, str(attributes[source.key]), attributes,
                                                   offline_position(values["updated_at"])))
                load.rows += len(chunk)
                load.written += apply_dimension_changes(client, changes)
                progress(f"  {name}: {load.rows} rows read, {load.written} newer than Redis")
        loads.append(load)
    return loads
