"""Typed reading of source values (Canal sends strings, Debezium numbers, writers anything).

Each reader returns the canonical JSON form stored in metadata, or raises BadInput naming
the value: money as a 2-decimal string, times as ISO-8601 with milliseconds, integers as int.
"""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from inputs.events import BadInput

CENT = Decimal("0.01")
_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S")


def parse_time(value: Any) -> dt.datetime:
    """A naive datetime from text (``YYYY-MM-DD HH:MM:SS[.fff]``, ISO) or epoch milliseconds."""
    if isinstance(value, bool):
        raise BadInput(f"{value!r} is not a time")
    if isinstance(value, dt.datetime):  # a database row read by a driver
        return value if value.tzinfo is None else value.astimezone(dt.UTC).replace(tzinfo=None)
    if isinstance(value, int):
        return dt.datetime.fromtimestamp(value / 1000, dt.UTC).replace(tzinfo=None)
    if isinstance(value, str):
        text = value.strip().removesuffix("Z")
        for pattern in _TIME_FORMATS:
            try:
                return dt.datetime.strptime(text, pattern)
            except ValueError:
                continue
        try:
            parsed = dt.datetime.fromisoformat(text)
        except ValueError:
            raise BadInput(f"{value!r} is not a time") from None
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
        return parsed
    raise BadInput(f"{value!r} is not a time")


def format_time(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def parse_money(value: Any) -> Decimal:
    """A non-negative amount rounded to cents; raises BadInput for text, negatives, NaN."""
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise BadInput(f"{value!r} is not an amount")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise BadInput(f"{value!r} is not an amount") from None
    if not amount.is_finite():
        raise BadInput(f"{value!r} is not an amount")
    if amount < 0:
        raise BadInput(f"{value!r} is a negative amount")
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def parse_int(value: Any) -> int:
    if isinstance(value, bool):
        raise BadInput(f"{value!r} is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise BadInput(f"{value!r} is not an integer")


def parse_text(value: Any) -> str:
    if isinstance(value, str | int) and not isinstance(value, bool):
        return str(value)
    raise BadInput(f"{value!r} is not text")


#: Column type name -> reader returning the canonical stored value.
READERS = {
    "text": parse_text,
    "int": parse_int,
    "money": lambda value: str(parse_money(value)),
    "time": lambda value: format_time(parse_time(value)),
}
