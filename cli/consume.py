"""``tdc consume rabbitmq|redis|nats|kafka``: messages from a broker through intake, acknowledged
once stored; and ``tdc bench consume``."""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

#: Messages per intake transaction, as ``tdc ingest`` batches lines (cli.ingest.INGEST_BATCH).
CONSUME_BATCH = 500


def _source(args: argparse.Namespace) -> Any:
    from streams.consume.kafka import KafkaSource
    from streams.consume.nats_jetstream import NatsJetStreamSource
    from streams.consume.rabbitmq import RabbitMQSource
    from streams.consume.redis_streams import RedisStreamSource

    if args.broker == "rabbitmq":
        return RabbitMQSource(args.url, args.queue, args.name or f"rabbitmq:{args.queue}", args.batch)
    if args.broker == "redis":
        return RedisStreamSource(args.url, args.stream, args.group, args.consumer or socket.gethostname(),
                                 args.name or f"redis:{','.join(args.stream)}:{args.group}",
                                 claim_idle=args.claim_idle, null_value=args.null_value)
    if args.broker == "nats":
        return NatsJetStreamSource(args.url, args.stream, args.subject, args.durable,
                                   args.name or f"nats:{args.stream}:{args.durable}", args.batch,
                                   ack_wait=args.ack_wait)
    name = args.name or f"kafka:{','.join(args.topic)}:{args.group}"
    return KafkaSource(args.bootstrap, args.topic, args.group, name,
                       extra=dict(setting.split("=", 1) for setting in args.config))


def run_consume(args: argparse.Namespace) -> int:
    import worker  # noqa: F401 - configures the Celery app the chains are sent with
    from cli.progress import progress
    from flows.registry import ACCEPTED
    from models.redis_store import get_redis
    from models.storage import get_storage
    from streams.consume.batches import Message, take_in
    from streams.consume.loop import Consumed, SourceError, consume
    from tasks.submit import submit_tasks

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("streams").setLevel(logging.INFO)
    storage, client = get_storage(), get_redis()
    source = _source(args)
    stop = threading.Event()

    def stop_after_batch(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, stop_after_batch)
    signal.signal(signal.SIGINT, stop_after_batch)

    def taken(messages: list[Message]) -> Any:
        return take_in(storage, client, ACCEPTED, args.format, messages)

    print(f"consuming {source.name} as {args.format}" + (f" until idle for {args.idle_exit:g}s" if args.idle_exit
                                                         else " until stopped"), file=sys.stderr)
    with progress(f"consume {source.name}", unit="messages") as shown:
        def show(consumed: Consumed, messages: int) -> None:
            report = consumed.report
            lag = "unknown" if consumed.lag is None else f"{consumed.lag:,}"
            shown.advance(messages, note=f"{report.accepted:,} accepted, {report.duplicated:,} duplicated, "
                                         f"{report.quarantined:,} quarantined; lag {lag}")
        try:
            consumed = consume(source, taken, submit_tasks, client, batch=args.batch, idle_exit=args.idle_exit,
                               stop=stop, shown=show)
        except SourceError as error:
            print(f"tdc: {error}", file=sys.stderr)
            return 2
    print(f"{consumed.messages} messages acknowledged ({consumed.ended}); {consumed.report.summary()}; "
          f"{consumed.submitted} tasks submitted")
    for reason, count in sorted(consumed.report.reasons.items(), key=lambda kv: -kv[1])[:10]:
        print(f"  quarantined {count}x: {reason}")
    return 0 if consumed.ended in ("idle", "stopped") else 1


def run_bench(args: argparse.Namespace) -> int:
    from cli.bench_consume import bench_consume

    return bench_consume(args.orders, args.format, args.seed)


def add_commands(commands: Any, bench: Any) -> None:
    """``tdc consume BROKER`` on the command parsers, ``tdc bench consume`` on the bench's."""
    consume = commands.add_parser("consume", help="take in messages from a broker (Canal, Debezium, business "
                                  "writes); acknowledged once stored").add_subparsers(dest="broker", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--format", required=True, choices=["canal", "debezium", "business"])
    common.add_argument("--batch", type=int, default=CONSUME_BATCH, help="messages per intake transaction "
                        f"(default {CONSUME_BATCH})")
    common.add_argument("--idle-exit", type=float, default=None, metavar="SECONDS",
                        help="exit 0 after this long with nothing new (default: run until stopped)")
    common.add_argument("--name", help="the consumer's name in the printed progress and in /metrics "
                        "(default: broker and what it reads)")

    rabbitmq = consume.add_parser("rabbitmq", parents=[common], help="a RabbitMQ queue (Canal's RabbitMQ connector)")
    _url_arguments(rabbitmq, "amqp://user:password@host:5672/vhost")
    rabbitmq.add_argument("--queue", required=True, help="an existing queue (Canal's rabbitmq.queue)")

    redis_ = consume.add_parser("redis", parents=[common], help="Redis Streams (Debezium Server's Redis sink)")
    _url_arguments(redis_, "redis://[:password@]host:6379/0")
    redis_.add_argument("--stream", required=True, action="append",
                        help="a stream key (the sink writes one per table); repeat for several")
    redis_.add_argument("--group", required=True, help="consumer group (created at the stream's start if absent)")
    redis_.add_argument("--consumer", help="this consumer's name in the group (default: the host name, so a "
                        "restart re-reads what it held)")
    redis_.add_argument("--claim-idle", type=float, default=None, metavar="SECONDS",
                        help="claim entries another consumer has left pending this long (default 60)")
    redis_.add_argument("--null-value", default="default",
                        help="the sink's debezium.sink.redis.null.value: a tombstone (default 'default')")

    nats = consume.add_parser("nats", parents=[common], help="NATS JetStream (Debezium Server's NATS JetStream sink)")
    _url_arguments(nats, "nats://host:4222")
    nats.add_argument("--stream", required=True, help="the JetStream stream (the sink's DebeziumStream)")
    nats.add_argument("--subject", required=True, help="subject filter, wildcards allowed (gqsh-source.gqsh.*)")
    nats.add_argument("--durable", required=True, help="durable consumer (created to deliver all if absent)")
    nats.add_argument("--ack-wait", type=float, default=None, metavar="SECONDS",
                      help="for a consumer created now: redelivery after this long unacknowledged (default 60)")

    kafka = consume.add_parser("kafka", parents=[common], help="Kafka topics (Canal or Debezium), with confluent-kafka")
    kafka.add_argument("--bootstrap", required=True, help="HOST:PORT[,HOST:PORT...]")
    kafka.add_argument("--topic", required=True, action="append", help="a topic (^regex allowed); repeat for several")
    kafka.add_argument("--group", required=True, help="consumer group (a new one starts at the earliest offset)")
    kafka.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                       help="a librdkafka setting (security.protocol=SASL_SSL, sasl.mechanism=..., "
                            "session.timeout.ms=...); repeat for several")
    kafka.add_argument("--config-file", type=Path, metavar="PATH",
                       help="librdkafka settings as KEY=VALUE lines (# comments): for sasl.password and other "
                            "secrets, kept out of the process list; --config wins over it")
    for parser in (rabbitmq, redis_, nats, kafka):
        parser.set_defaults(run=_with_defaults)

    bench_consume = bench.add_parser("consume", help="lines per second through tdc consume (Redis Streams) vs "
                                     "tdc ingest on the same lines")
    bench_consume.add_argument("--orders", type=int, default=1000)
    bench_consume.add_argument("--format", choices=["canal", "debezium"], default="canal")
    bench_consume.add_argument("--seed", type=int, default=5)
    bench_consume.set_defaults(run=run_bench)


def _url_arguments(parser: argparse.ArgumentParser, example: str) -> None:
    url = parser.add_mutually_exclusive_group(required=True)
    url.add_argument("--url", help=example)
    url.add_argument("--url-file", type=Path, metavar="PATH",
                     help="read the URL from this file (keeps a password out of the process list)")


def _secrets(args: argparse.Namespace) -> str | None:
    """Fill ``args.url`` from ``--url-file`` and add ``--config-file``'s settings to ``--config``;
    the reason when a file cannot be read."""
    try:
        if getattr(args, "url_file", None) is not None:
            args.url = args.url_file.read_text().strip()
        if getattr(args, "config_file", None) is not None:
            lines = args.config_file.read_text().splitlines()
            args.config = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")] \
                + args.config
    except OSError as error:
        return str(error)
    return None


def _with_defaults(args: argparse.Namespace) -> int:
    from streams.consume.nats_jetstream import ACK_WAIT_SECONDS
    from streams.consume.redis_streams import CLAIM_IDLE_SECONDS

    if getattr(args, "claim_idle", 0) is None:
        args.claim_idle = CLAIM_IDLE_SECONDS
    if getattr(args, "ack_wait", 0) is None:
        args.ack_wait = ACK_WAIT_SECONDS
    if args.batch < 1:
        print("tdc: --batch must be at least 1", file=sys.stderr)
        return 2
    unreadable = _secrets(args)
    if unreadable:
        print(f"tdc: {unreadable}", file=sys.stderr)
        return 2
    if any("=" not in setting for setting in getattr(args, "config", [])):
        print("tdc: --config takes KEY=VALUE", file=sys.stderr)
        return 2
    return run_consume(args)
