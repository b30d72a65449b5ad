"""What the engine works out of a declaration once per flow, not per entity or per call."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

from flows.declaration import FlowDeclaration

T = TypeVar("T")


def per_flow(make: Callable[[FlowDeclaration], T]) -> Callable[[FlowDeclaration], T]:
    """``make(flow)``, kept by flow name for as long as that name is this declaration (a test or
    ``tdc flow validate`` may make another declaration of the same name: it is worked out anew)."""
    made: dict[str, tuple[FlowDeclaration, T]] = {}

    @functools.wraps(make)
    def once(flow: FlowDeclaration) -> T:
        found = made.get(flow.name)
        if found is None or found[0] is not flow:
            found = made[flow.name] = (flow, make(flow))
        return found[1]
    return once
