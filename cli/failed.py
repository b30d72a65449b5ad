"""``tdc failed list | show ID | retry ID... | retry --all``."""

from __future__ import annotations

import sys

from chain.lineage import attempt_line
from chain.wide_rows import to_json
from models.storage import get_storage
from reliability.failures import get_failure, list_failures, parse_failure_id, revive


def list_failed(limit: int) -> int:
    failures = list_failures(get_storage(), limit)
    for entry in failures:
        print(f"{entry['failed_at']:%Y-%m-%d %H:%M:%S}  {entry['id']:<40} attempts {entry['attempts']:<3} "
              f"{entry['reason']}")
    print(f"{len(failures)} unresolved failed tasks shown" + (" (limit reached)" if len(failures) == limit else ""))
    return 0


def show_failed(failure: str, as_json: bool) -> int:
    try:
        order_id, operation = parse_failure_id(failure)
    except ValueError as error:
        print(f"tdc: {error}", file=sys.stderr)
        return 2
    entry = get_failure(get_storage(), order_id, operation)
    if entry is None:
        print(f"tdc: no failed task {failure}", file=sys.stderr)
        return 1
    if as_json:
        print(to_json(entry))
        return 0
    state = f"resolved at {entry['resolved_at']}" if entry["resolved_at"] else "unresolved"
    print(f"{entry['id']}  failed at {entry['failed_at']}, {entry['attempts']} attempts, {state}")
    print(f"reason: {entry['reason']}")
    print(f"last error: {entry['last_error']}")
    print("attempts:")
    for attempt in entry["history"]:
        print(f"  {attempt_line(attempt)}")
    print("data came from:")
    for source in entry["sources"]:
        print(f"  {source}")
    return 0


def retry_failed(failures: list[str], every: bool) -> int:
    import worker  # noqa: F401 - configures the Celery app the chains are sent with
    from tasks.submit import submit_tasks

    storage = get_storage()
    if every == bool(failures):
        print("tdc: give failure ids (ORDER_ID/OPERATION) or --all", file=sys.stderr)
        return 2
    try:
        keys = ([(e["order_id"], e["operation_type"]) for e in list_failures(storage)] if every
                else [parse_failure_id(f) for f in failures])
    except ValueError as error:
        print(f"tdc: {error}", file=sys.stderr)
        return 2
    revived = revive(storage, keys)
    submitted = submit_tasks(revived)
    for order_id, operation in keys:
        if (order_id, operation) not in revived:
            print(f"  {order_id}/{operation}: not failed (any more); left alone")
    print(f"{len(revived)} failed tasks revived, {submitted} submitted (the others are already running)")
    return 0
