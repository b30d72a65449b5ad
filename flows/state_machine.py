"""The order state machine as data (DESIGN section 3), read by ``blocking_reason``."""

from __future__ import annotations

from collections.abc import Collection


class Operation:
    SUBMIT = "SUBMIT"
    PAY = "PAY"
    DELIVER = "DELIVER"
    COMPLETE = "COMPLETE"
    REFUND = "REFUND"
    CANCEL = "CANCEL"
    ALL = (SUBMIT, PAY, DELIVER, COMPLETE, REFUND, CANCEL)


#: Operation -> the operation that must be DONE before it may run.
PREDECESSOR: dict[str, str | None] = {
    Operation.SUBMIT: None,
    Operation.PAY: Operation.SUBMIT,
    Operation.DELIVER: Operation.PAY,
    Operation.COMPLETE: Operation.PAY,
    Operation.REFUND: Operation.PAY,
    Operation.CANCEL: Operation.SUBMIT,
}

#: Operation -> operation whose completion makes it illegal (a data error, not a wait).
ILLEGAL_AFTER: dict[str, str] = {Operation.CANCEL: Operation.PAY}

#: Order status each operation brings the wide row to; the row keeps the highest reached.
STATUS_AFTER: dict[str, int] = {
    Operation.SUBMIT: 10,
    Operation.PAY: 20,
    Operation.DELIVER: 30,
    Operation.COMPLETE: 40,
    Operation.CANCEL: 50,
}

#: Operation -> operations waiting for it, woken when it finishes.
SUCCESSORS: dict[str, tuple[str, ...]] = {
    operation: tuple(after for after, before in PREDECESSOR.items() if before == operation)
    for operation in Operation.ALL
}


#: How every wait for a predecessor is worded (a failed task with this reason is revived when
#: its predecessor finishes).
WAITING_FOR = "waiting for "


class Illegal(Exception):
    """The operation can never run on this order (e.g. CANCEL after PAY)."""


def blocking_reason(operation: str, done: Collection[str], ever_done: Collection[str]) -> str | None:
    """Why ``operation`` may not run yet given the DONE operations, or None if it may.

    Raises Illegal when an operation it may never follow has completed.
    """
    forbidden = ILLEGAL_AFTER.get(operation)
    if forbidden is not None and forbidden in ever_done:
        raise Illegal(f"{operation} after {forbidden} is not allowed")
    predecessor = PREDECESSOR[operation]
    if predecessor is not None and predecessor not in done:
        return f"{WAITING_FOR}{predecessor}"
    return None
