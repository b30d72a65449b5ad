"""Chain keys as the messages carry them: ``{"order_id", "operation_type", "token"}``, plus
``version`` after the check step.  Small and import-light: the worker's consumer reads them too."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flows.registry import runs_operation

Key = dict[str, Any]


def well_formed(key: Any) -> bool:
    """A task key: an entity id and an operation of its flow's state machine."""
    return (isinstance(key, dict) and isinstance(key.get("order_id"), str)
            and isinstance(key.get("operation_type"), str) and runs_operation(key["order_id"], key["operation_type"]))


def has_token(key: Key) -> bool:
    """The key carries a fencing token (an integer; JSON has no other kind to mistake for one)."""
    token = key.get("token")
    return isinstance(token, int) and not isinstance(token, bool)


def owned(keys: Iterable[Key]) -> dict[str, int]:
    """The order -> token leases ``keys`` were sent under."""
    return {key["order_id"]: key["token"] for key in keys}
