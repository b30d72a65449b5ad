"""Source column types as a flow declares them, and reading any reader's value of one.

A declaration names the column's type in the source database: ``varchar(32)``, ``bigint``,
``decimal(12,2)`` (``unsigned`` refuses negative values; ``money`` is ``decimal(12,2) unsigned``),
``date``, ``datetime(3)``, ``timestamp(3)``, ``time(6)``.  The type says how to read a value
whatever shape the reader sent it in:

- Canal sends every value as text in the source's wall-clock time.
- Debezium sends DECIMAL as base64 bytes (``decimal.handling.mode=precise``, its default), as
  text (``string``) or as a number (``double``); DATE as days since the epoch; DATETIME(0-3) as
  epoch milliseconds and DATETIME(4-6) as microseconds *of the wall-clock value*; TIMESTAMP as
  UTC text with a ``Z`` (``ZonedTimestamp``); TIME as microseconds since midnight.  With the
  schema envelope the parser decodes by the schema first; without it the declared type decides.
- Business writes and database drivers send text, numbers or native values.

Every time is stored as UTC: a wall-clock value (no offset) is read in the source time zone,
a value with an offset (or ``Z``) is an instant.  Stored forms: amounts as text with the
declared scale, times as ``YYYY-MM-DDTHH:MM:SS.mmm`` (UTC), dates as ``YYYY-MM-DD``, times
of day as ``HH:MM:SS.ffffff``, integers as numbers.  A value that does not read raises BadInput
naming it; nothing else escapes.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal
from functools import cache, cached_property
from typing import Any
from zoneinfo import ZoneInfo

from inputs.events import BadInput

UTC = ZoneInfo("UTC")
_EPOCH = dt.datetime(1970, 1, 1)
_EPOCH_DAY = dt.date(1970, 1, 1)
_TYPE = re.compile(r"^\s*(?P<name>[a-z]+)\s*(?:\(\s*(?P<a>\d+)\s*(?:,\s*(?P<b>\d+)\s*)?\))?"
                   r"\s*(?P<unsigned>unsigned)?\s*$", re.IGNORECASE)
_DECIMAL_TEXT = re.compile(r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$")
_INTEGER_TEXT = re.compile(r"^\s*[-+]?\d+\s*$")
_TIME_OF_DAY = re.compile(r"^\s*(-)?(\d{1,3}):([0-5]\d):([0-5]\d)(?:\.(\d{1,9}))?\s*$")
_ZERO_DATE = re.compile(r"^\s*0000-00-00")
_INT_BITS = {"tinyint": 8, "smallint": 16, "mediumint": 24, "int": 32, "integer": 32, "bigint": 64}
_TEXT = ("varchar", "char", "text", "tinytext", "mediumtext", "longtext")
#: The widest reading of a wall-clock year the wide rows can store.
_YEARS = range(1, 10000)


@dataclass(frozen=True)
class Reading:
    """How to read values of one input: the source's time zone, and whether they come from
    Debezium (whose integers and bare strings mean its temporal and decimal encodings)."""

    zone: ZoneInfo = UTC
    debezium: bool = False


@dataclass(frozen=True)
class ColumnType:
    name: str
    #: varchar/char: the longest text; decimal: the precision; temporal: fractional digits.
    size: int | None = None
    scale: int = 0
    unsigned: bool = False

    @property
    def declaration(self) -> str:
        size = "" if self.size is None else f"({self.size}{f',{self.scale}' if self.name == 'decimal' else ''})"
        return f"{self.name}{size}{' unsigned' if self.unsigned else ''}"

    def read(self, value: Any, reading: Reading) -> Any:
        """The stored form of ``value``; None for NULL (and for MySQL's zero dates)."""
        if value is None:
            return None
        try:
            return _READERS[self.kind](self, value, reading)
        except (OverflowError, OSError, ValueError, ArithmeticError) as error:
            if isinstance(error, BadInput):
                raise
            raise BadInput(f"{value!r} does not read as {self.declaration}: {error}") from None

    @cached_property
    def kind(self) -> str:
        if self.name in _INT_BITS:
            return "int"
        if self.name in _TEXT:
            return "text"
        return self.name


def column_type(declaration: str) -> ColumnType:
    """Parse a declared type; raises ValueError naming what is not understood."""
    if declaration.strip().lower() == "money":
        return ColumnType("decimal", 12, 2, unsigned=True)
    match = _TYPE.match(declaration)
    name = match.group("name").lower() if match else ""
    if match is None or not (name in _INT_BITS or name in _TEXT
                             or name in ("decimal", "date", "datetime", "timestamp", "time")):
        raise ValueError(f"{declaration!r} is not a column type tdc reads (varchar(n), bigint, decimal(p,s), "
                         f"date, datetime(p), timestamp(p), time(p), money)")
    a = int(match.group("a")) if match.group("a") else None
    b = int(match.group("b")) if match.group("b") else None
    unsigned = bool(match.group("unsigned"))
    if name == "decimal":
        precision, scale = a or 10, b or 0
        if not 0 < precision <= 65 or scale > precision:
            raise ValueError(f"{declaration!r}: decimal precision must be 1-65 and at least the scale")
        return ColumnType("decimal", precision, scale, unsigned)
    if name in ("datetime", "timestamp", "time"):
        if (a or 0) > 6 or b is not None:
            raise ValueError(f"{declaration!r}: fractional seconds are 0-6 digits")
        return ColumnType(name, a or 0)
    if name in ("varchar", "char") and a is None:
        raise ValueError(f"{declaration!r}: {name} needs a length")
    return ColumnType(name, a, 0, unsigned)


# --- readers ------------------------------------------------------------------------------------


def _read_text(kind: ColumnType, value: Any, reading: Reading) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadInput(f"{_show(value)} is not text")
    text = str(value)
    if kind.size is not None and len(text) > kind.size:
        raise BadInput(f"{_show(value)} is longer than {kind.declaration}")
    return text


def _read_int(kind: ColumnType, value: Any, reading: Reading) -> int:
    number: int | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        number = int(value)
    elif isinstance(value, str) and _INTEGER_TEXT.match(value):
        number = int(value)
    if number is None:
        raise BadInput(f"{_show(value)} is not an integer")
    bits = _INT_BITS[kind.name]
    low, high = (0, (1 << bits) - 1) if kind.unsigned else (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    if not low <= number <= high:
        raise BadInput(f"{number} is out of range for {kind.declaration}")
    return number


def _read_decimal(kind: ColumnType, value: Any, reading: Reading) -> str:
    amount: Decimal | None = None
    if isinstance(value, bool):
        amount = None
    elif isinstance(value, Decimal):
        amount = value
    elif isinstance(value, int | float):
        amount = Decimal(str(value))  # decimal.handling.mode=double, or a writer's number
    elif isinstance(value, str):
        if reading.debezium and _base64_decimal(value, kind):
            amount = _unscaled(value, kind.scale)  # decimal.handling.mode=precise
        elif _DECIMAL_TEXT.match(value):
            amount = Decimal(value.strip())
    if amount is None or not amount.is_finite():
        raise BadInput(f"{_show(value)} is not an amount")
    if amount < 0 and kind.unsigned:
        raise BadInput(f"{_show(value)} is a negative amount")
    digits = (kind.size or 65) - kind.scale
    if amount.adjusted() >= digits:
        raise BadInput(f"{_show(value)} is out of range for {kind.declaration}")
    return str(amount.quantize(_quantum(kind.scale), rounding=ROUND_HALF_UP, context=_WIDE))


#: Room for every decimal(65, s) when quantizing (the default context holds 28 digits).
_WIDE = Context(prec=80)


@cache
def _quantum(scale: int) -> Decimal:
    return Decimal(1).scaleb(-scale)


def _base64_decimal(text: str, kind: ColumnType) -> bool:
    """Whether Debezium text is a precise decimal: base64, and not plain decimal text.  Debezium's
    ``string`` mode writes the column's scale (``22.00``), so digits alone with a scale are
    base64; for scale 0 digits alone read as the number."""
    if "." in text or text.strip().lstrip("+-").isdigit() and kind.scale == 0:
        return False
    return bool(re.fullmatch(r"[A-Za-z0-9+/]*={0,2}", text)) and len(text) % 4 == 0 and len(text) > 0


def _unscaled(text: str, scale: int) -> Decimal:
    try:
        unscaled = int.from_bytes(base64.b64decode(text, validate=True), "big", signed=True)
    except (binascii.Error, ValueError):
        raise BadInput(f"{_show(text)} is not a base64 decimal") from None
    return Decimal(unscaled).scaleb(-scale)


def _wall_clock_epoch(number: int, precision: int) -> dt.datetime:
    """Debezium's Timestamp/MicroTimestamp: the wall-clock value counted as if it were UTC."""
    per_second = 1000 if precision <= 3 else 1_000_000
    seconds, fraction = divmod(number, per_second)
    return _EPOCH + dt.timedelta(seconds=seconds, microseconds=fraction * 1_000_000 // per_second)


def _moment(kind: ColumnType, value: Any, reading: Reading) -> dt.datetime | None:
    """An aware datetime (UTC) from any shape a reader sends, or None for a zero date."""
    if isinstance(value, bool):
        raise BadInput(f"{_show(value)} is not a time")
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, int) and reading.debezium and kind.name == "datetime":
        moment = _wall_clock_epoch(value, kind.size or 0)
    elif isinstance(value, int):
        # An instant in epoch milliseconds (a business write, a Debezium TIMESTAMP in connect mode).
        moment = dt.datetime.fromtimestamp(value / 1000, dt.UTC)
    elif isinstance(value, str):
        if _ZERO_DATE.match(value):
            return None  # MySQL's zero date: no time, as Debezium reads it
        moment = _parse_time_text(value)
    else:
        raise BadInput(f"{_show(value)} is not a time")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=reading.zone)
    moment = moment.astimezone(dt.UTC)
    if moment.year not in _YEARS:
        raise BadInput(f"{_show(value)} is out of range for {kind.declaration}")
    return moment


def _parse_time_text(value: str) -> dt.datetime:
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(f"{_show(value)} is not a time") from None


def _read_datetime(kind: ColumnType, value: Any, reading: Reading) -> str | None:
    moment = _moment(kind, value, reading)
    return None if moment is None else format_time(moment)


def _read_date(kind: ColumnType, value: Any, reading: Reading) -> str | None:
    if isinstance(value, dt.datetime):
        raise BadInput(f"{_show(value)} is a time, not a date")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, int) and not isinstance(value, bool):
        return (_EPOCH_DAY + dt.timedelta(days=value)).isoformat()  # io.debezium.time.Date
    if isinstance(value, str):
        if _ZERO_DATE.match(value):
            return None
        try:
            return dt.date.fromisoformat(value.strip()).isoformat()
        except ValueError:
            pass
    raise BadInput(f"{_show(value)} is not a date")


def _read_time(kind: ColumnType, value: Any, reading: Reading) -> str:
    """A TIME value (which MySQL lets run from -838:59:59 to 838:59:59) as [-]HH:MM:SS.ffffff."""
    if isinstance(value, dt.timedelta):
        micros = value // dt.timedelta(microseconds=1)
    elif isinstance(value, dt.time):
        micros = ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000 + value.microsecond
    elif isinstance(value, int) and not isinstance(value, bool) and reading.debezium:
        micros = value  # io.debezium.time.MicroTime (time.precision.mode=adaptive_time_microseconds)
    elif isinstance(value, str) and (match := _TIME_OF_DAY.match(value)):
        sign, hours, minutes, seconds, fraction = match.groups()
        micros = ((int(hours) * 60 + int(minutes)) * 60 + int(seconds)) * 1_000_000 + int((fraction or "0")[:6]
                                                                                            .ljust(6, "0"))
        micros = -micros if sign else micros
    else:
        raise BadInput(f"{_show(value)} is not a time of day")
    limit = ((838 * 60 + 59) * 60 + 59) * 1_000_000 + 999_999
    if abs(micros) > limit:
        raise BadInput(f"{_show(value)} is out of range for {kind.declaration}")
    sign = "-" if micros < 0 else ""
    seconds, fraction = divmod(abs(micros), 1_000_000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    return f"{sign}{hour:02d}:{minute:02d}:{second:02d}.{fraction:06d}"


_READERS = {
    "text": _read_text,
    "int": _read_int,
    "decimal": _read_decimal,
    "datetime": _read_datetime,
    "timestamp": _read_datetime,
    "date": _read_date,
    "time": _read_time,
}


def format_time(moment: dt.datetime) -> str:
    """The stored form of an instant: UTC, naive, to the millisecond."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="milliseconds")


def read_instant(value: Any, reading: Reading, what: str) -> dt.datetime:
    """An instant (aware, UTC) from a writer's time; BadInput naming ``what`` otherwise."""
    try:
        moment = _moment(ColumnType("timestamp", 3), value, reading)
    except (OverflowError, OSError, ValueError, ArithmeticError) as error:
        if isinstance(error, BadInput):
            raise BadInput(f"{what}: {error.reason}") from None
        raise BadInput(f"{what}: {_show(value)} is not a time") from None
    if moment is None:
        raise BadInput(f"{what}: {_show(value)} is not a time")
    return moment


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
