"""``tdc outbox``: run the changelog relay, or show what waits in the changelog outbox."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType

#: Longest one pass of a relay that runs on publishes before it reports and purges.
PASS_SECONDS = 60.0
#: Longest wait before trying again after a failed pass (a broker or database away), doubling up to it.
BACKOFF_CAP_SECONDS = 60.0


def relay(once: bool, kill_after_rounds: int | None = None) -> int:
    """Publish the changelog outbox: once (everything waiting now, then exit), or every
    TDC_CHANGELOG_RELAY_SECONDS until SIGTERM/SIGINT, which end it after the round in hand."""
    from models.storage import get_storage
    from settings import SettingsError, get_settings
    from streams.outbox import RelayFailed, RelayReport, Sinks, relay_pass, until

    settings = get_settings()
    if not settings.changelog_outbox:
        print("tdc: neither TDC_CHANGELOG_URL nor TDC_EVENTS_URL is set: nothing to relay", file=sys.stderr)
        return 2
    stopping = False

    def stop(_signal: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    after_publish = None
    if kill_after_rounds is not None:
        def after_publish(published: int) -> None:
            # Dies like a killed process: published, not yet marked.
            if published >= kill_after_rounds:
                sys.stdout.flush()
                os.kill(os.getpid(), signal.SIGKILL)

    storage, total, sinks, failures = get_storage(), RelayReport(), None, 0
    try:
        while not stopping:
            try:
                try:
                    sinks = sinks or Sinks.configured(settings)
                except SettingsError as error:  # a sink URL no retry mends
                    print(f"tdc: {error}", file=sys.stderr)
                    return 2
                # A pass ends on a signal (after the round in hand); a relay that runs on also
                # ends it now and then, so the purge and the report come round.
                report = relay_pass(storage, sinks, until(float("inf") if once else PASS_SECONDS, lambda: stopping),
                                    after_publish)
                failures = 0
            except Exception as error:  # noqa: BLE001 - a broker or database away: the round stays unmarked
                if isinstance(error, RelayFailed):
                    total.add(error.report)  # the other sink went on
                print(f"tdc: relay pass failed: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
                if once:
                    return 1
                if sinks is not None:
                    sinks.close()
                    sinks = None
                failures += 1
                _pause(min(BACKOFF_CAP_SECONDS, settings.changelog_relay_seconds * 2 ** failures), lambda: stopping)
                continue
            total.add(report)
            if report.published or report.purged:
                print(f"published {report.published} changes and {report.events} events"
                      + (f", purged {report.purged}" if report.purged else "")
                      + (f"; databases {report.skipped} held by another relay" if report.skipped else ""), flush=True)
            if once:
                break
            if not report.published:
                _pause(settings.changelog_relay_seconds, lambda: stopping)
    finally:
        if sinks is not None:
            sinks.close()
    print(f"done: {total.published} changes, {total.events} events published"
          + (f"; skipped databases {sorted(set(total.skipped))} (another relay held them)" if total.skipped else ""))
    return 0


def _pause(seconds: float, stopping: Callable[[], bool]) -> None:
    """Sleep ``seconds``, or less when ``stopping()`` becomes true."""
    deadline = time.monotonic() + seconds
    while not stopping() and time.monotonic() < deadline:
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


def status() -> int:
    """Per shard database: changes waiting, the oldest waiting, published changes kept."""
    from models.storage import get_storage
    from streams.outbox import backlog

    for entry in backlog(get_storage()):
        oldest = f", oldest written {entry['oldest']:%Y-%m-%d %H:%M:%S} UTC" if entry["oldest"] else ""
        print(f"database {entry['database']}: {entry['waiting']} waiting{oldest}; "
              f"{entry['published_kept']} published and kept")
    return 0


def cmd_outbox(args: argparse.Namespace) -> int:
    if args.outbox_command == "relay":
        return relay(args.once, args.kill_after_rounds)
    return status()


def add_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("outbox", help="the changelog outbox: relay it to its sinks, or show what waits")
    manage = parser.add_subparsers(dest="outbox_command", required=True)
    run = manage.add_parser(
        "relay", help="publish wide-row changes to TDC_CHANGELOG_URL and their events to TDC_EVENTS_URL",
        description="Publishes each shard database's waiting changes in order per order, marks them published "
                    "once the sink confirmed, and purges changes published longer ago than "
                    "TDC_CHANGELOG_RETENTION_HOURS. Several relays may run: each database is relayed by one at a "
                    "time. Runs until SIGTERM (finishing the round in hand) unless --once.")
    run.add_argument("--once", action="store_true", help="publish what waits now, then exit")
    # For the crash tests: die by SIGKILL after publishing this many rounds, before marking the last.
    run.add_argument("--kill-after-rounds", type=int, help=argparse.SUPPRESS)
    manage.add_parser("status", help="changes waiting per shard database, and published changes kept")
    parser.set_defaults(run=cmd_outbox)
