"""The storage side of fencing: each order's largest claimed token, checked where steps write.

A chain's first step claims the order with its token (only a larger token may claim over a
smaller one); every later write of the chain first checks, with a row lock held to the end of
its transaction, that the order's token is still its own.  A holder whose lease expired and
was taken over finds a larger token there and writes nothing.  The warehouse keeps its own
copy per order in the ADS ledger (``warehouse.aggregates``).
"""

from __future__ import annotations

import datetime as dt
from typing import cast

from sqlalchemy import Connection, Table, select, update

from models.driver_sql import driver_time, marks
from models.orders import OrderFence
from models.writes import insert_if_absent

FENCE = cast(Table, OrderFence.__table__)


def claim_order(connection: Connection, order_id: str, token: int, now: dt.datetime) -> bool:
    """Make ``token`` the order's current token unless a larger one has claimed it; True when
    the order is ours.  The fence row stays locked until the caller's transaction ends."""
    for _ in range(2):
        claimed = connection.execute(update(FENCE).where(
            (FENCE.c.order_id == order_id) & (FENCE.c.token <= token)).values(token=token, claimed_at=now)).rowcount
        if claimed:
            return True
        if insert_if_absent(connection, FENCE, dict(order_id=order_id, token=token, claimed_at=now)):
            return True
        # The row exists: it holds a larger token, unless another chain inserted it just now.
        current = connection.execute(select(FENCE.c.token).where(FENCE.c.order_id == order_id)).scalar()
        if current is not None and current > token:
            return False
    return False


def claim_orders(connection: Connection, tokens: dict[str, int], now: dt.datetime) -> set[str]:
    """``claim_order`` for many orders of one database in two statements: the orders that are
    ours.  Fence rows are written (and so locked to the end of the transaction) in key order."""
    if not tokens:
        return set()
    orders = sorted(tokens)
    at = driver_time(connection, now)
    values = ", ".join([f"({marks(connection, 3)})"] * len(orders))
    if connection.dialect.name in ("mysql", "mariadb"):
        # Assignments run left to right: claimed_at is compared with the token before it changes.
        conflict = ("ON DUPLICATE KEY UPDATE claimed_at = IF(VALUES(token) >= token, VALUES(claimed_at), claimed_at), "
                    "token = GREATEST(token, VALUES(token))")
    else:
        conflict = ("ON CONFLICT (order_id) DO UPDATE SET token = excluded.token, claimed_at = excluded.claimed_at "
                    "WHERE order_fence.token <= excluded.token")
    connection.exec_driver_sql(f"INSERT INTO order_fence (order_id, token, claimed_at) VALUES {values} {conflict}",
                               tuple(v for order_id in orders for v in (order_id, tokens[order_id], at)))
    return _current(connection, tokens, lock=False)


def held_orders(connection: Connection, tokens: dict[str, int]) -> set[str]:
    """The orders of one database whose current token is still ours, in one statement; their
    fence rows stay locked (taken in key order) to the end of the transaction, so no newer
    holder can claim an order under our writes."""
    return _current(connection, tokens, lock=True) if tokens else set()


def _current(connection: Connection, tokens: dict[str, int], lock: bool) -> set[str]:
    query = select(FENCE.c.order_id, FENCE.c.token).where(FENCE.c.order_id.in_(sorted(tokens)))
    rows = connection.execute(query.order_by(FENCE.c.order_id).with_for_update() if lock else query)
    return {order_id for order_id, token in rows if tokens[order_id] == token}
