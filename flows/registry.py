"""The flows tdc runs, compiled from their declarations: what intake routes by (``ACCEPTED``) and,
for an entity, its flow and state machine.  The engine reads only these.

Running another flow means listing its declaration in ``RUNNING``.  Until entities of two flows
can share the task tables (issue 19's next step), one flow runs at a time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flows import BusinessSource, Flow, SourceTable
from flows.declaration import FlowDeclaration, Source
from flows.declared import BY_NAME
from flows.machine import StateMachine
from flows.rules import raised_operations


def _reads(source: Source) -> Any:
    if not source.reads:
        return None

    def reads(operation: str, row: Mapping[str, Any]) -> Mapping[str, Any]:
        columns = source.reads.get(operation)
        return row if columns is None else {name: row.get(name) for name in columns}
    return reads


def routing(flow: FlowDeclaration) -> Flow:
    """What intake needs of a declaration: each source table with its key, columns and the
    operations a change of a row raises (``flows.rules``), each dimension table, each business
    source."""
    tables: dict[str, SourceTable] = {}
    for source in flow.sources:
        if len(source.key) != 1:
            raise ValueError(f"flow {flow.name!r} source {source.name!r}: a key of several columns is not routed yet")

        def operations(row: Mapping[str, Any], change: str, table: str = source.name) -> tuple[str, ...]:
            return raised_operations(flow, table, change, row)
        tables[source.name] = SourceTable(source.name, key=source.key[0], columns=source.columns,
                                          operations=operations, order_key=source.entity_key,
                                          reads=_reads(source), settled_at=source.settled_at)
    for dimension in flow.dimensions:
        tables[dimension.table] = SourceTable(dimension.table, key=dimension.key, columns=dimension.columns,
                                              order_key=None, dimension=dimension.name)
    business = {b.name: BusinessSource(b.name, operations=b.operations, payload=b.payload) for b in flow.business}
    return Flow(name=flow.name, tables=tables, business=business, databases=flow.databases)


def combine(flows: tuple[Flow, ...]) -> Flow:
    """One routing table over ``flows``; raises ValueError when two claim the same source."""
    tables: dict = {}
    business: dict = {}
    for flow in flows:
        for registry, names in ((tables, flow.tables), (business, flow.business)):
            clash = registry.keys() & names.keys()
            if clash:
                raise ValueError(f"flow {flow.name!r} redeclares {', '.join(sorted(clash))}")
            registry.update(names)
    databases = tuple(dict.fromkeys(name for flow in flows for name in flow.databases))
    return Flow(name="+".join(f.name for f in flows), tables=tables, business=business, databases=databases)


#: The declarations the engine runs.
RUNNING: tuple[FlowDeclaration, ...] = (BY_NAME["gqsh"],)
#: What intake routes by.
ACCEPTED = combine(tuple(routing(flow) for flow in RUNNING))
_MACHINES = {flow.name: StateMachine.of(flow) for flow in RUNNING}


def flow_of(entity_id: str) -> FlowDeclaration:
    """The flow an entity (an order, a document) belongs to."""
    return RUNNING[0]


def machine_of(entity_id: str) -> StateMachine:
    """The state machine of an entity's flow."""
    return _MACHINES[flow_of(entity_id).name]


def operations_run() -> frozenset[str]:
    """Every operation name of the flows run: what a chain key may carry."""
    return frozenset(name for machine in _MACHINES.values() for name in machine.order)
