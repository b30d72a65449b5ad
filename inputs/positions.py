"""Where a change sits in its source's history, and which of two changes of one row is newer.

Readers stamp every change with the strongest position it carries, in this preference:

1. **GTID**: the transaction's sequence number within its GTID domain (a MySQL server uuid, a
   MariaDB domain id).  It survives a fail-over, which binlog coordinates do not.
2. **Binlog coordinates**: file index, offset and row, on one server.  A snapshot row carries the
   coordinates the snapshot was read at and sorts before every change streamed from there.
3. **Event time** only, where a reader has no position (business writes, Canal without GTIDs).
   Event time cannot order a statement that waited on a lock (it started earlier and committed
   later), so a change that is not newer *by time* is never judged stale: intake keeps it as
   ambiguous.

Two changes are compared on the strongest component both carry; ``compare`` says which one it
used.  Positions are stored as short text (``encode``/``decode``): numbers in base 36 behind
upper-case tags, so the longest fits the 64 characters of the metadata column.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from enum import Enum

from inputs.events import BadInput


class Basis(Enum):
    """What decided an order between two positions."""

    GTID = "gtid"
    BINLOG = "binlog"
    TIME = "time"

    @property
    def exact(self) -> bool:
        """True when the order is the source's own (commit order), not a guess from clocks."""
        return self is not Basis.TIME


@dataclass(frozen=True)
class Position:
    #: Event or commit time in epoch milliseconds: the fallback every position carries.
    time_ms: int
    #: (domain, sequence): ``domain`` is a short hash of the server uuid or MariaDB domain id.
    gtid: tuple[str, int] | None = None
    #: (file index, offset) in the binlog of ``server``.
    binlog: tuple[int, int] | None = None
    #: Server id of the binlog coordinates; 0 when the reader does not say (comparable with any).
    server: int = 0
    #: Row within its event or message.
    row: int = 0
    #: Read by a snapshot at ``binlog``: before every change streamed from there.
    snapshot: bool = False

    def describe(self) -> str:
        """The position for people: ``gtid …:42, binlog 3:4015 row 0, 2026-11-02T09:30:00.125Z``."""
        parts = []
        if self.gtid:
            parts.append(f"gtid {self.gtid[0]}:{self.gtid[1]}")
        if self.binlog:
            server = f" on server {self.server}" if self.server else ""
            parts.append(f"{'snapshot at ' if self.snapshot else ''}binlog {self.binlog[0]}:{self.binlog[1]}{server}")
        if self.row:
            parts.append(f"row {self.row}")
        try:
            moment = dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=self.time_ms)
            parts.append(moment.isoformat(timespec="milliseconds") + "Z")
        except OverflowError:
            parts.append(f"{self.time_ms} ms")
        return ", ".join(parts)


def compare(a: Position, b: Position) -> tuple[int, Basis]:
    """-1, 0 or 1 as ``a`` is older than, level with or newer than ``b``, and what decided it."""
    if a.gtid and b.gtid and a.gtid[0] == b.gtid[0] and not (a.snapshot or b.snapshot):
        if a.gtid[1] != b.gtid[1]:
            return _sign(a.gtid[1] - b.gtid[1]), Basis.GTID
        # One transaction: its events in binlog order, when both say where they are; otherwise
        # (Canal sends no coordinates, and a row's index is only its place in one message) level.
        if a.binlog and b.binlog and a.server == b.server:
            return _order((a.binlog, a.row), (b.binlog, b.row)), Basis.GTID
        return 0, Basis.GTID
    if a.binlog and b.binlog and (a.server == b.server or not a.server or not b.server):
        return _order((a.binlog, not a.snapshot, a.row), (b.binlog, not b.snapshot, b.row)), Basis.BINLOG
    return _order(a.time_ms, b.time_ms), Basis.TIME


def newest(positions: list[Position]) -> Position:
    """The newest of ``positions`` (the first of equals)."""
    best = positions[0]
    for position in positions[1:]:
        if compare(position, best)[0] > 0:
            best = position
    return best


def _sign(value: int) -> int:
    return (value > 0) - (value < 0)


def _order(a: object, b: object) -> int:
    return (a > b) - (a < b)  # type: ignore[operator]


# --- reading positions from what readers send -------------------------------------------------

_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
_INTERVAL = re.compile(r"^(\d+)(?:-(\d+))?$")
_MARIADB_GTID = re.compile(r"^(\d+)-(\d+)-(\d+)$")
_BINLOG_INDEX = re.compile(r"\.(\d+)$")


def _domain(name: str) -> str:
    """A fixed-width stand-in for a GTID domain: 8 hex digits of its hash."""
    return hashlib.sha1(name.lower().replace("-", "").encode()).hexdigest()[:8]


#: The domain of positions read from executed GTID sets: their size orders them.
EXECUTED_SET = _domain("executed gtid set")


def parse_gtid(value: object, what: str) -> tuple[str, int] | None:
    """(domain, sequence) of one transaction's GTID, as Debezium's ``source.gtid`` and the binlog
    give it: MySQL ``uuid:seq`` (tagged: ``uuid:tag:seq``) or MariaDB ``domain-server-seq``.
    None for an absent GTID; BadInput for one that reads as neither."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadInput(f"{what} {value!r} is not a GTID")
    text = value.strip()
    if match := _MARIADB_GTID.match(text):
        return _domain(f"mariadb-domain-{match.group(1)}"), bounded(int(match.group(3)), LIMITS["sequence"], what)
    parts = text.split(":")
    if len(parts) in (2, 3) and _UUID.match(parts[0]) and parts[-1].isdigit():
        if int(parts[-1]) == 0 or not parts[0].strip("0-"):
            return None  # an anonymous transaction (gtid_mode OFF): no GTID
        # A tagged GTID (MySQL 8.4, uuid:tag:N) is numbered per tag: the tag is part of the domain.
        return _domain(":".join(parts[:-1]).lower()), bounded(int(parts[-1]), LIMITS["sequence"], what)
    raise BadInput(f"{what} {value!r} is not one transaction's GTID (uuid:sequence or domain-server-sequence)")


def parse_gtid_set(value: object, what: str) -> tuple[str, int] | None:
    """The position an executed GTID set gives, as Canal (1.1.7+) sends it in ``gtid``: the set
    of every transaction up to and including this one (MySQL ``uuid:1-42,uuid2:1-7``, tags and
    gaps allowed; MariaDB ``domain-server-seq`` per domain).  A later transaction's set holds one
    more, so the number of transactions in the set orders them, across a fail-over too."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadInput(f"{what} {value!r} is not a GTID set")
    total = 0
    for member in (part.strip() for part in value.split(",")):
        if match := _MARIADB_GTID.match(member):
            total += int(match.group(3))
            continue
        pieces = member.split(":")
        if len(pieces) < 2 or not _UUID.match(pieces[0]):
            raise BadInput(f"{what} {value!r} is not a GTID set")
        for piece in pieces[1:]:
            interval = _INTERVAL.match(piece)
            if interval is None:
                if piece and piece.replace("_", "").isalnum() and not piece[0].isdigit():
                    continue  # a tag (MySQL 8.4): the intervals after it count
                raise BadInput(f"{what} {value!r} is not a GTID set")
            low, high = int(interval.group(1)), int(interval.group(2) or interval.group(1))
            if high < low:
                raise BadInput(f"{what} {value!r} is not a GTID set")
            total += high - low + 1
    return (EXECUTED_SET, bounded(total, LIMITS["sequence"], what)) if total else None


def binlog_index(file: object, what: str) -> int:
    """The sequence number of a binlog file name (``mysql-bin.000003`` -> 3)."""
    match = _BINLOG_INDEX.search(str(file)) if isinstance(file, str) else None
    if match is None:
        raise BadInput(f"{what} {file!r} is not a binlog file name like mysql-bin.000003")
    return bounded(int(match.group(1)), LIMITS["file"], what)


#: The largest value of each part of a position, so that the longest stored form fits its
#: 64-character column: times to the year 30000 in milliseconds (a time in microseconds is refused),
#: 63-bit GTID sequences, 32-bit server ids, 40-bit binlog offsets, 10^7 binlog files and rows.
LIMITS = {"time": 10**15, "sequence": (1 << 63) - 1, "server": (1 << 32) - 1, "file": 10**7 - 1,
          "offset": (1 << 40) - 1, "row": 10**7 - 1}


def whole(value: object, what: str, default: int | None = None, limit: int = LIMITS["sequence"]) -> int:
    """A non-negative integer field of a position, at most ``limit``; BadInput naming it otherwise."""
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise BadInput(f"{what} {value!r} is not a non-negative integer")
    try:
        number = int(value)
    except ValueError:
        raise BadInput(f"{what} {value!r} is not a non-negative integer") from None
    if number < 0:
        raise BadInput(f"{what} {value!r} is not a non-negative integer")
    return bounded(number, limit, what)


def bounded(number: int, limit: int, what: str) -> int:
    if number > limit:
        raise BadInput(f"{what} {number} is larger than a position holds ({limit})")
    return number


def time_position(moment: dt.datetime) -> Position:
    """The position of something that carries only a time (naive means UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return Position(int(moment.timestamp() * 1000))


# --- storage form -----------------------------------------------------------------------------

_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
_STORED = re.compile(r"^T([0-9a-z]+)(?:G([0-9a-f]{8})\.([0-9a-z]+))?(?:B([0-9a-z]+)\.([0-9a-z]+)\.([0-9a-z]+))?"
                     r"(?:R([0-9a-z]+))?(S)?$")
_OLDER_FORM = re.compile(r"^(\d{13})(?:\.|$)")


def _b36(number: int) -> str:
    text = ""
    while True:
        number, digit = divmod(number, 36)
        text = _DIGITS[digit] + text
        if not number:
            return text


def encode(position: Position) -> str:
    """The stored form: ``T<time>[G<domain>.<seq>][B<server>.<file>.<offset>][R<row>][S]``."""
    text = "T" + _b36(max(position.time_ms, 0))
    if position.gtid:
        text += f"G{position.gtid[0]}.{_b36(position.gtid[1])}"
    if position.binlog:
        text += f"B{_b36(position.server)}.{_b36(position.binlog[0])}.{_b36(position.binlog[1])}"
    if position.row:
        text += "R" + _b36(position.row)
    return text + ("S" if position.snapshot else "")


def decode(text: str) -> Position:
    """A stored position.  Positions an older tdc stored (13 digits of milliseconds first) read
    as their time alone."""
    match = _STORED.match(text)
    if match is None:
        older = _OLDER_FORM.match(text)
        if older is None:
            raise ValueError(f"{text!r} is not a stored position")
        return Position(int(older.group(1)))
    time_ms, domain, sequence, server, file, offset, row, snapshot = match.groups()
    return Position(
        time_ms=int(time_ms, 36),
        gtid=(domain, int(sequence, 36)) if domain else None,
        binlog=(int(file, 36), int(offset, 36)) if file else None,
        server=int(server, 36) if server else 0,
        row=int(row, 36) if row else 0,
        snapshot=bool(snapshot),
    )
