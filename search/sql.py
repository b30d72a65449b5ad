"""The SQL fallback: the query run on the searched flow's wide rows in every shard database at
once, merged, sorted newest first and cut to the limit, each entity with its nested child rows."""

from __future__ import annotations

from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.sql.elements import ColumnElement

from chain.wide_rows import read_orders
from models.storage import Storage
from search.documents import SearchDocument
from search.query import OrderQuery, newest_first


def conditions(query: OrderQuery, document: SearchDocument | None = None) -> list[ColumnElement[bool]]:
    document = document or query.document()
    root, child, declared = document.root, document.child, document.declared
    found: list[ColumnElement[bool]] = []
    for name, value in query.fields(document):
        if "." in name:
            assert child is not None
            column = child.c[name.split(".", 1)[1]]
            found.append(exists().where((child.c[document.child_entity] == root.c[document.key])
                                        & (column == value)))
        else:
            found.append(root.c[name] == value)
    if declared.amount is not None:
        if query.min_amount is not None:
            found.append(root.c[declared.amount] >= query.min_amount)
        if query.max_amount is not None:
            found.append(root.c[declared.amount] <= query.max_amount)
    if declared.day is not None:
        if query.date_from is not None:
            found.append(root.c[declared.day] >= query.date_from)
        if query.date_to is not None:
            found.append(root.c[declared.day] <= query.date_to)
    return found


def search_sql(storage: Storage, query: OrderQuery) -> list[dict[str, Any]]:
    """The entities ``query`` finds, newest first, at most ``query.limit``, each with its nested
    child rows (QueryError for a condition the flow does not declare)."""
    document = query.document()
    root, key, newest_by = document.root, document.key, document.declared.newest_by
    order_by = ([root.c[newest_by].is_(None), root.c[newest_by].desc()] if newest_by else []) + [root.c[key].desc()]
    picked = [root.c[key]] + ([root.c[newest_by]] if newest_by else [])
    # Non-NULL times first on every backend (PostgreSQL sorts NULLs first when descending).
    statement = select(*picked).where(*conditions(query, document)).order_by(*order_by).limit(query.limit)

    def one(database: int) -> list[dict[str, Any]]:
        with storage.read_engine(database).connect() as connection:
            return [dict(row._mapping) for row in connection.execute(statement)]
    candidates = [row for rows in storage.each_database(one) for row in rows]
    chosen = sorted(candidates, key=lambda row: newest_first(row, document), reverse=True)[:query.limit]
    ids = [document.entity_id(row) for row in chosen]
    rows, children = read_orders(storage, ids)
    lines: dict[Any, list[dict[str, Any]]] = {}
    if document.child is not None:
        for line in sorted(children.values(), key=lambda c: c[document.child_key]):
            lines.setdefault(line[document.child_entity], []).append(
                {name: line.get(name) for name in document.child_fields})
    # A found entity looks the same on both paths: its document's fields and child rows (search.documents).
    found = []
    for entity_id in ids:
        if entity_id in rows:
            doc = {name: rows[entity_id].get(name) for name in document.fields}
            if document.child is not None:
                doc[document.nested_as] = lines.get(rows[entity_id][key], [])
            found.append(doc)
    return found
