"""The flows tdc accepts input for.  Onboarding a flow: declare it in its own module and list it
here; intake, tasks and the command line read only ``ACCEPTED``."""

from __future__ import annotations

from flows import Flow
from flows.gqsh import ORDER_FLOW

#: Every declared flow; a source table or business source belongs to exactly one.
FLOWS: tuple[Flow, ...] = (ORDER_FLOW,)


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


#: What intake routes by.
ACCEPTED = combine(FLOWS)
