"""``tdc cdc binlog`` and ``tdc cdc snapshot``: reading the source database itself."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from types import FrameType

from cdc.source import Source, SourceError, default_server_id, require_followed, source_of


def _source(args: argparse.Namespace) -> Source:
    from settings import get_settings

    url = args.source_url or get_settings().cdc_source_url
    if not url:
        raise SourceError("give the source with --source-url or TDC_CDC_SOURCE_URL "
                          "(mysql+pymysql://user:password@host:3306/database; prefer the variable for passwords)")
    return source_of(url)


def _progress(line: str) -> None:
    print(f"  {line}", file=sys.stderr)


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def tail_binlog(args: argparse.Namespace) -> int:
    import worker  # noqa: F401 - configures the Celery app the chains are sent with
    from cdc.binlog import BinlogTail, DecodingFailed, start_position
    from flows.registry import ACCEPTED
    from models.redis_store import get_redis
    from models.storage import get_storage
    from tasks.submit import submit_tasks

    try:
        source = _source(args)
        require_followed(get_storage(), ACCEPTED, source)
        name = args.name or source.default_name
        position = start_position(get_storage(), source, name, args.start)
    except SourceError as error:
        print(f"tdc: {error}", file=sys.stderr)
        return 2
    tail = BinlogTail(get_storage(), get_redis(), ACCEPTED, source, name,
                      args.server_id or default_server_id(name), submit_tasks, decoding=args.decode_in)
    print(f"tailing {source.host}:{source.port}/{source.database} as {name} from "
          f"{position.log_file}:{position.log_pos}" + (" until caught up" if args.stop_when_idle else "")
          + ", decoding " + ("in a process of its own" if tail.decoding == "process" else "in a thread of this one"),
          file=sys.stderr)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    started = time.monotonic()
    try:
        report = tail.run(position, stop_when_idle=args.stop_when_idle, progress=_progress if args.progress else None)
    except KeyboardInterrupt:
        report = tail.report  # everything up to the stored position is safely ingested
    except DecodingFailed as error:
        at = tail.report.position or position
        print(f"tdc: {error}; everything up to {at.log_file}:{at.log_pos} is in, and a restart resumes "
              f"there", file=sys.stderr)
        return 1
    at = report.position or position
    print(f"{report.transactions} transactions, {report.changes} row changes in {time.monotonic() - started:.1f}s; "
          f"{report.intake.summary()}; {report.submitted} tasks submitted; position {at.log_file}:{at.log_pos}"
          + (f" (GTID {at.gtid})" if at.gtid else ""))
    return 0


def snapshot(args: argparse.Namespace) -> int:
    import worker  # noqa: F401 - configures the Celery app the chains are sent with
    from cdc.snapshot import take_snapshot
    from flows.registry import ACCEPTED
    from models.redis_store import get_redis
    from models.storage import get_storage
    from tasks.submit import submit_tasks

    try:
        source = _source(args)
        name = args.name or source.default_name
        report = take_snapshot(get_storage(), get_redis(), ACCEPTED, source, name, submit_tasks,
                               tables=args.table or None, where=args.where, reset_position=args.reset_position,
                               progress=_progress)
    except (SourceError, ValueError) as error:
        print(f"tdc: {error}", file=sys.stderr)
        return 2
    for table, rows in report.rows.items():
        print(f"{table}: {rows} rows")
    at = report.position
    print(f"{report.intake.summary()}; {report.submitted} tasks submitted; snapshot at {at.log_file}:{at.log_pos}")
    if report.handed_over:
        print(f"the tail {name} starts from the snapshot's position: `tdc cdc binlog`")
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    cdc = commands.add_parser("cdc", help="read the source database itself").add_subparsers(
        dest="cdc_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--source-url", help="mysql+pymysql://user:password@host:port/database "
                        "(default TDC_CDC_SOURCE_URL)")
    common.add_argument("--name", help="name the position is stored under (default binlog:HOST:PORT/DATABASE)")

    binlog = cdc.add_parser("binlog", parents=[common], help="tail the binlog from the stored position")
    binlog.add_argument("--from", dest="start", choices=["now", "oldest"],
                        help="where to start when no position is stored (default: refuse; take a snapshot)")
    binlog.add_argument("--server-id", type=int, help="replica id to register with (default: derived from --name)")
    binlog.add_argument("--stop-when-idle", action="store_true", help="exit once caught up instead of waiting")
    binlog.add_argument("--progress", action="store_true", help="print the position after each batch")
    binlog.add_argument("--decode-in", choices=["process", "thread"], default="process",
                        help="decode the binlog in a process of its own, on a second core (the default), or in a "
                             "thread of the tail's process (one core, one process to watch)")
    binlog.set_defaults(run=tail_binlog)

    snap = cdc.add_parser("snapshot", parents=[common], help="ingest current source rows consistently",
                          description="Read the current rows of the followed tables in one consistent, read-only "
                                      "transaction and ingest them as snapshot events.")
    snap.add_argument("--table", action="append", help="only this followed table (repeatable)")
    snap.add_argument("--where", help="SQL condition limiting the rows, e.g. \"updated_at >= '2026-11-20'\". "
                      "Operator-only: it is pasted into the SELECT as given (the database and table names "
                      "around it are quoted identifiers), run read-only with the source account's rights; never "
                      "pass text from anyone who does not already hold that account")
    snap.add_argument("--reset-position", action="store_true",
                      help="restart the tail from the snapshot's position (after purged binlogs)")
    snap.set_defaults(run=snapshot)
