"""The flows tdc runs, compiled from their declarations: what intake routes by (``ACCEPTED``) and,
for an entity, its flow and state machine.  The engine reads only these.

Every declared flow has its tables (``models.wide``, ``models.warehouse``); the ones named in
``TDC_FLOWS`` (default ``gqsh``) are run: intake accepts their input.  An entity's id names its
flow (``FlowDeclaration.entity_prefix``), so the flows share the task tables, leases and queues.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from flows import BusinessSource, Flow, SourceTable
from flows.declaration import FlowDeclaration, Source
from flows.declared import BY_NAME, DECLARATIONS
from flows.machine import StateMachine
from flows.rules import raising
from settings import flow_names


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

        tables[source.name] = SourceTable(source.name, key=source.key[0], columns=source.columns,
                                          operations=raising(flow, source.name), order_key=source.entity_key,
                                          reads=_reads(source), settled_at=source.settled_at,
                                          entity_prefix=flow.entity_prefix)
    for dimension in flow.dimensions:
        tables[dimension.table] = SourceTable(dimension.table, key=dimension.key, columns=dimension.columns,
                                              order_key=None, dimension=dimension.name)
    business = {b.name: BusinessSource(b.name, operations=b.operations, payload=b.payload,
                                       entity_prefix=flow.entity_prefix) for b in flow.business}
    return Flow(name=flow.name, tables=tables, business=business, databases=flow.databases,
                prefixes=(flow.entity_prefix,))


def combine(flows: tuple[Flow, ...]) -> Flow:
    """One routing table over ``flows``; raises ValueError when two claim the same source (a
    dimension table two flows declare alike is one table: the store master of the online
    orders and the tills)."""
    tables: dict = {}
    business: dict = {}
    for flow in flows:
        for registry, names in ((tables, flow.tables), (business, flow.business)):
            clash = {name for name in registry.keys() & names.keys()
                     if not (registry[name].dimension is not None if registry is tables else False)
                     or registry[name] != names[name]}
            if clash:
                raise ValueError(f"flow {flow.name!r} redeclares {', '.join(sorted(clash))}")
            registry.update(names)
    databases = tuple(dict.fromkeys(name for flow in flows for name in flow.databases))
    prefixes = tuple(dict.fromkeys(prefix for flow in flows for prefix in flow.prefixes))
    return Flow(name="+".join(f.name for f in flows), tables=tables, business=business, databases=databases,
                prefixes=prefixes)


def running(names: tuple[str, ...]) -> tuple[FlowDeclaration, ...]:
    """The declarations of ``names``; ValueError naming an unknown one and the declared ones."""
    unknown = [name for name in names if name not in BY_NAME]
    if unknown:
        raise ValueError(f"TDC_FLOWS: no flow {', '.join(map(repr, unknown))}; declared: {', '.join(BY_NAME)}")
    return tuple(BY_NAME[name] for name in names)


#: The declarations the engine runs (``TDC_FLOWS``, read alone: importing this module must not
#: fix every setting before a process has set its environment).
RUNNING: tuple[FlowDeclaration, ...] = running(flow_names(os.environ))
#: What intake routes by.  A bare id must not read as any declared flow's entity, run or not.
ACCEPTED = replace(combine(tuple(routing(flow) for flow in RUNNING)),
                   prefixes=tuple(flow.entity_prefix for flow in DECLARATIONS))
_MACHINES = {flow.name: StateMachine.of(flow) for flow in DECLARATIONS}


#: Declared flows, longest entity prefix first: the first whose prefix an id starts with owns it.
_BY_PREFIX = sorted(DECLARATIONS, key=lambda flow: len(flow.entity_prefix), reverse=True)


def flow_of(entity_id: str) -> FlowDeclaration:
    """The flow an entity (an order, a document) belongs to, by its id's prefix.  Raises
    KeyError for an id no declared flow owns."""
    for flow in _BY_PREFIX:
        if entity_id.startswith(flow.entity_prefix):
            return flow
    raise KeyError(f"no declared flow owns entity {entity_id!r}")


def machine_of(entity_id: str) -> StateMachine:
    """The state machine of an entity's flow."""
    return _MACHINES[flow_of(entity_id).name]


def runs_operation(entity_id: str, operation: str) -> bool:
    """Whether ``operation`` is one of the entity's flow's (an id no flow owns: False)."""
    try:
        return operation in machine_of(entity_id).after
    except KeyError:
        return False

