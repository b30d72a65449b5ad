"""Wide rows ↔ ADS: every declared aggregate kept by business day recomputed from the wide rows
against what is stored.

Each shard database sums, per aggregate, the rows of its wide table whose entity contributes
(the aggregate's ``when`` on the root row, as ``warehouse.contributions`` counts it) by the
aggregate's keys (``GROUP BY``, no row leaves the database); the sums are added up and compared
cell by cell, measure by measure, with the stored aggregates of the days.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import defaultdict
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import and_, func, literal, select

from flows.ads import DECLARED, Declared, declared_aggregates
from flows.declaration import FlowDeclaration
from flows.declared import DECLARATIONS
from inputs.columns import ColumnType
from models.storage import Storage
from models.wide import schema_of, where_clause
from reconcile.diffs import Diff, LayerResult, as_date, days_between
from warehouse.aggregates import read_aggregates
from warehouse.contributions import Cells

LAYER = "ads"


def _summed(flow: FlowDeclaration, declared: Declared, first: dt.date, last: dt.date) -> Any:
    """One aggregate's cells of [first, last] in one database, as SQL."""
    schema = schema_of(flow)
    root, aggregate = schema.root, declared.aggregate
    source = root
    joined: Any = root
    if declared.child:
        source = cast(Any, schema.child)
        joined = source.join(root, source.c[cast(str, schema.child_entity)] == root.c[schema.entity])
    keys: list[Any] = []
    conditions: list[Any] = [root.c[cast(str, declared.day)].between(first, last)]
    for name in aggregate.keys:
        column = source.c[name]
        if declared.key_types[name].kind == "text":
            keys.append(func.coalesce(column, literal("None")))  # as the incremental path counts it
        else:
            keys.append(column)
            conditions.append(column.is_not(None))
    measures: list[Any] = []
    for measure in aggregate.measures:
        if measure.column is None:
            measures.append(func.count())
            continue
        value: Any = func.coalesce(source.c[measure.column], 0)
        if measure.less is not None:
            value = value - func.coalesce(source.c[measure.less], 0)
        measures.append(func.sum(value))
    conditions += [where_clause(root, predicate) for predicate in aggregate.when]
    return select(*keys, *measures).select_from(joined).where(and_(*conditions)).group_by(*keys)


def _value(kind: ColumnType | None, value: Any) -> Any:
    if kind is None or kind.kind == "int":
        return int(value or 0)
    return Decimal(str(value or 0)).quantize(Decimal(1).scaleb(-kind.scale))


def recomputed_cells(storage: Storage, first: dt.date, last: dt.date) -> Cells:
    """The day-kept aggregates of [first, last] as the wide rows make them, summed by the databases."""
    queries = [(declared, _summed(flow, declared, first, last)) for flow in DECLARATIONS
               for declared in declared_aggregates(flow) if declared.day is not None]

    def sums(database: int) -> list[list[Any]]:
        with storage.read_engine(database).connect() as connection:
            return [list(connection.execute(query)) for _, query in queries]
    cells: dict[tuple[str, tuple[Any, ...]], dict[str, Any]] = defaultdict(lambda: defaultdict(int))
    for part in storage.each_database(sums):
        for (declared, _), rows in zip(queries, part, strict=True):
            names = declared.aggregate.keys
            for row in rows:
                key = tuple(as_date(value) if declared.key_types[name].kind == "date" else
                            (str(value) if declared.key_types[name].kind == "text" else value)
                            for name, value in zip(names, row[:len(names)], strict=True))
                cell = cells[(declared.name, key)]
                for measure, value in zip(declared.aggregate.measures, row[len(names):], strict=True):
                    cell[measure.name] += _value(declared.measure_types[measure.name], value)
    # The incremental path deletes a cell left holding nothing.
    return {cell: dict(values) for cell, values in cells.items() if any(values.values())}


def _same(table: str, measure: str, expected: Any, found: Any) -> bool:
    kind = DECLARED[table].measure_types[measure]
    return _value(kind, expected) == _value(kind, found)


def _shown(table: str, measure: str, value: Any) -> str:
    return str(_value(DECLARED[table].measure_types[measure], value))


def cell_name(table: str, key: tuple[Any, ...]) -> str:
    return " ".join([table, *(k.isoformat() if isinstance(k, dt.date) else str(k) for k in key)])


def compare_ads(storage: Storage, first: dt.date, last: dt.date) -> LayerResult:
    """Every aggregate cell of the days, recomputed against stored."""
    result = LayerResult(LAYER)
    started = time.perf_counter()
    want = recomputed_cells(storage, first, last)
    result.seconds["wide sums"] = time.perf_counter() - started
    with storage.dws_engine.connect() as connection:
        have = read_aggregates(connection, days_between(first, last))
    result.seconds["stored cells"] = time.perf_counter() - started - result.seconds["wide sums"]
    for cell in sorted(want.keys() | have.keys(), key=lambda c: (c[0], tuple(str(k) for k in c[1]))):
        table, key = cell
        declared = DECLARED[table]
        measures = tuple(m.name for m in declared.aggregate.measures)
        expected, found = want.get(cell), have.get(cell)
        day = key[declared.aggregate.keys.index(cast(str, declared.day))]
        name = cell_name(table, key)
        if expected is None or found is None:
            present = expected or found
            assert present is not None
            row = json.dumps({m: _shown(table, m, present.get(m)) for m in measures})
            result.diffs.append(Diff(LAYER, day, None, name, "*", row if expected else None,
                                     row if found else None, table))
            continue
        for measure in measures:
            if not _same(table, measure, expected.get(measure), found.get(measure)):
                result.diffs.append(Diff(LAYER, day, None, name, measure, _shown(table, measure, expected.get(measure)),
                                         _shown(table, measure, found.get(measure)), table))
    result.counts = {"cells": len(want.keys() | have.keys()),
                     "cells_differing": len({d.target for d in result.diffs})}
    return result
