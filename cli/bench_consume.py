"""``tdc bench consume``: lines per second through ``tdc consume`` against ``tdc ingest`` on the
same lines, into the configured storage (chains are not submitted by either side).

Two histories are generated from one seed, so their lines are the same but for the order ids
(each side stores new orders, none finds the other's duplicates).  One is ingested as ``tdc
ingest`` reads a file (``accept_lines`` in batches of 500); the other is written to a fresh
Redis stream as Debezium Server's Redis sink writes entries (compact: one field per entry) and
read back by the Redis Streams consumer in batches of 500, through a consumer group, each batch
acknowledged after intake.  The consumer's time runs from its start to its last
acknowledgement.  Goal: at least 0.8 times the ingest rate.
"""

from __future__ import annotations

import threading
import time
import uuid

from cli.progress import progress
from demo.history import generate_history
from flows.registry import ACCEPTED
from intake.receiver import IntakeReport, accept_lines
from models.redis_store import get_redis
from models.storage import get_storage
from streams.consume.batches import Message, take_in
from streams.consume.loop import Consumed, consume
from streams.consume.redis_streams import RedisStreamSource

BATCH = 500
#: The goal: consuming costs at most a fifth more than ingesting a file.
GOAL = 0.8


def bench_consume(orders: int, input_format: str, seed: int) -> int:
    import worker  # noqa: F401 - starts the embedded Redis in the default setup
    from models.schema import init_storage
    from settings import get_settings

    storage = get_storage()
    init_storage(storage)  # safe to run again
    client = get_redis()
    ingested = [line for fmt, line in generate_history(orders, seed=seed, input_format=input_format).lines
                if fmt == input_format]
    consumed_lines = [line for fmt, line in generate_history(orders, seed=seed, input_format=input_format).lines
                      if fmt == input_format]
    print(f"{len(ingested)} {input_format} lines ({orders} orders) each way, in batches of {BATCH}")

    ingest_report = IntakeReport()
    with progress("ingest", total=len(ingested), unit="lines") as shown:
        started = time.perf_counter()
        for start in range(0, len(ingested), BATCH):  # as tdc ingest reads a file (cli.ingest)
            ingest_report.add(accept_lines(storage, client, ACCEPTED, input_format, ingested[start:start + BATCH]))
            shown.advance(len(ingested[start:start + BATCH]))
        ingest_seconds = time.perf_counter() - started
    print(f"  ingest: {ingest_report.summary()}")

    stream = f"tdc:bench:consume:{uuid.uuid4().hex[:8]}"
    pipe = client.pipeline(transaction=False)
    for n, line in enumerate(consumed_lines):
        pipe.xadd(stream, {f'{{"n":{n}}}': line})  # compact: field = record key, value = event
    pipe.execute()
    source = RedisStreamSource(get_settings().redis_url, [stream], "bench", "bench-1", name="bench")
    finished = [0.0]
    try:
        with progress("consume", total=len(consumed_lines), unit="lines") as shown:
            def show(consumed: Consumed, messages: int) -> None:
                if messages:  # (0: only a new look at the lag)
                    finished[0] = time.perf_counter()
                    shown.advance(messages)

            def taken(messages: list[Message]):  # type: ignore[no-untyped-def]
                return take_in(storage, client, ACCEPTED, input_format, messages)

            started = time.perf_counter()
            result = consume(source, taken, lambda keys: 0, None, batch=BATCH, idle_exit=1.0,
                             stop=threading.Event(), shown=show, poll=0.2)
    finally:
        client.delete(stream)
    consume_seconds = finished[0] - started
    print(f"  consume: {result.report.summary()}")
    if result.messages != len(consumed_lines) or result.report.lines != ingest_report.lines:
        print(f"FAILED: {len(consumed_lines)} messages written, {result.messages} acknowledged, "
              f"{result.report.lines} lines taken in (ingest took in {ingest_report.lines})")
        return 1
    ingest_rate, consume_rate = len(ingested) / ingest_seconds, len(consumed_lines) / consume_seconds
    ratio = consume_rate / ingest_rate
    if ratio < GOAL:
        print(f"  below the goal of {GOAL}x")
    print(f"consume: ratio {ratio:.2f} (consume {consume_rate:,.0f} lines/s vs ingest {ingest_rate:,.0f} lines/s)")
    return 0
