"""Business writes pushed by other systems: ``{source, order_id, operation_type, unique_key,
payload, occurred_at}``.  ``occurred_at`` orders writes of one key; it is read, with the
payload's times, by routing (``flows.route``), in the source time zone unless it has an offset."""

from __future__ import annotations

from typing import Any

from inputs.events import BadInput, BusinessWrite, Parsed, require


def parse_business(write: Any) -> list[Parsed]:
    """The write as a BusinessWrite; raises BadInput when a field is missing or malformed."""
    fields = {key: require(write, key, "business write") for key in
              ("source", "order_id", "operation_type", "unique_key", "payload", "occurred_at")}
    for key in ("source", "order_id", "operation_type", "unique_key"):
        if not isinstance(fields[key], str | int) or str(fields[key]).strip() == "":
            raise BadInput(f"business write {key!r} is not a non-empty string")
    if not isinstance(fields["payload"], dict):
        raise BadInput("business write 'payload' is not an object", order_id=str(fields["order_id"]))
    return [
        BusinessWrite(
            source=str(fields["source"]),
            order_id=str(fields["order_id"]),
            operation_type=str(fields["operation_type"]).upper(),
            unique_key=str(fields["unique_key"]),
            payload=fields["payload"],
            occurred_at=fields["occurred_at"],
        )
    ]
