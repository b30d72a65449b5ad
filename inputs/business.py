"""Business writes pushed by other systems: ``{source, order_id, operation_type, unique_key,
payload, occurred_at}``."""

from __future__ import annotations

from typing import Any

from inputs.events import BadInput, BusinessWrite, Parsed, require
from inputs.values import parse_time


def parse_business(write: Any) -> list[Parsed]:
    """The write as a BusinessWrite; raises BadInput when a field is missing or malformed."""
    fields = {key: require(write, key, "business write") for key in
              ("source", "order_id", "operation_type", "unique_key", "payload", "occurred_at")}
    for key in ("source", "order_id", "operation_type", "unique_key"):
        if not isinstance(fields[key], str | int) or str(fields[key]).strip() == "":
            raise BadInput(f"business write {key!r} is not a non-empty string")
    if not isinstance(fields["payload"], dict):
        raise BadInput("business write 'payload' is not an object", order_id=str(fields["order_id"]))
    try:
        occurred_at = parse_time(fields["occurred_at"])
    except BadInput as error:
        raise BadInput(f"business write 'occurred_at': {error.reason}", str(fields["order_id"])) from None
    return [
        BusinessWrite(
            source=str(fields["source"]),
            order_id=str(fields["order_id"]),
            operation_type=str(fields["operation_type"]).upper(),
            unique_key=str(fields["unique_key"]),
            payload=fields["payload"],
            occurred_at=occurred_at,
        )
    ]
