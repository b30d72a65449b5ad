"""A flow's state machine, read from its declaration (DESIGN section 3): which operations must be
DONE before another may run, which make it illegal, the status each reaches, and the order the
chain takes an entity's due operations in."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from flows.declaration import FlowDeclaration

#: How every wait for a predecessor is worded (a failed task with this reason is revived when
#: its predecessor finishes).
WAITING_FOR = "waiting for "


class Illegal(Exception):
    """The operation can never run on this entity (e.g. CANCEL after PAY)."""


@dataclass(frozen=True)
class StateMachine:
    #: Every operation, each after all it waits for (declaration order where that allows).
    order: tuple[str, ...]
    #: Operation -> the operations that must be DONE before it may run.
    after: Mapping[str, tuple[str, ...]]
    #: Operation -> the operations whose completion makes it illegal (a data error, not a wait).
    illegal_after: Mapping[str, tuple[str, ...]]
    #: Operation -> the status the wide row reaches (the row keeps the highest).
    status_after: Mapping[str, int]
    #: Operation -> the operations waiting for it, woken when it finishes.
    successors: Mapping[str, tuple[str, ...]]

    @classmethod
    def of(cls, flow: FlowDeclaration) -> StateMachine:
        after = {operation.name: operation.after for operation in flow.operations}
        return cls(
            order=_topological(after),
            after=after,
            illegal_after={operation.name: operation.illegal_after for operation in flow.operations},
            status_after={o.name: o.status for o in flow.operations if o.status is not None},
            successors={name: tuple(later for later, before in after.items() if name in before) for name in after},
        )

    def rank(self, operation: str) -> int:
        """Where ``operation`` comes in the chain's order."""
        return self.order.index(operation)

    def blocking_reason(self, operation: str, done: Collection[str], ever_done: Collection[str]) -> str | None:
        """Why ``operation`` may not run yet given the DONE operations, or None if it may.

        Raises Illegal when an operation it may never follow has completed."""
        for forbidden in self.illegal_after[operation]:
            if forbidden in ever_done:
                raise Illegal(f"{operation} after {forbidden} is not allowed")
        for predecessor in self.after[operation]:
            if predecessor not in done:
                return f"{WAITING_FOR}{predecessor}"
        return None


def _topological(after: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    """The operations with each after its predecessors, otherwise in declaration order (the
    validator refuses cycles; one here would leave its members out, so it is refused again)."""
    placed: list[str] = []
    while len(placed) < len(after):
        ready = [name for name in after if name not in placed and all(p in placed for p in after[name])]
        if not ready:
            raise ValueError(f"state machine has a cycle among {sorted(set(after) - set(placed))}")
        placed.append(ready[0])
    return tuple(placed)
