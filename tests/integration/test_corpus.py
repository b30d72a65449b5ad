"""The corpus of real-shaped Canal and Debezium messages (``tests/corpus/*.yaml``): each case's
messages go through intake in arrival order on real MariaDB shards and Redis, each gets the
verdict the corpus names, then the chains run and the order's wide row (and where named its
stored metadata) must hold the values the corpus names."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from demo.tables import ORDER_TABLE as DwdOrder
from flows.registry import ACCEPTED
from inputs.positions import Position, encode
from intake.receiver import accept_lines
from models.cdc import SchemaChangeRecord
from models.orders import QuarantinedInput
from models.sharded import meta_table
from models.storage import Storage
from reliability.alarms import ALARM_COUNTERS
from settings import load_settings
from tests.conftest import new_order_id
from tests.integration.helpers import run_chains

pytestmark = pytest.mark.integration

CORPUS = Path(__file__).resolve().parent.parent / "corpus"


def _cases() -> list[Any]:
    cases = []
    for input_format in ("canal", "debezium"):
        document = yaml.safe_load((CORPUS / f"{input_format}.yaml").read_text())
        cases += [pytest.param(input_format, case, id=f"{input_format}: {case['case']}") for case in document["cases"]]
    return cases


def _line(step: dict[str, Any], order_id: str, item_id: int) -> str:
    text = step["line"] if "line" in step else json.dumps(step["message"])
    return text.replace('"@ITEM@"', str(item_id)).replace("@ITEM@", str(item_id)).replace("@ORDER@", order_id)


def _check_verdict(storage: Storage, client, verdict: str, report, order_id: str,  # type: ignore[no-untyped-def]
                   alarms_before: dict[str, int]) -> None:
    said = f"{report.summary()}; reasons {dict(report.reasons)}"
    if verdict == "accepted":
        assert report.accepted == 1, said
    elif verdict == "duplicate":
        assert report.duplicated == 1, said
    elif verdict == "stale":
        assert report.stale == 1, said
    elif verdict == "ambiguous":
        assert report.ambiguous == 1, said
        with storage.engine_for_order(order_id).connect() as connection:
            kept = connection.execute(select(QuarantinedInput.reason).where(
                QuarantinedInput.order_id == order_id)).scalars().all()
        assert any(reason.startswith("ambiguous order") for reason in kept), kept
        assert _alarms(client).get("ambiguous_order", 0) > alarms_before.get("ambiguous_order", 0)
    elif verdict.startswith("ignored "):
        assert report.ignored == 1 and dict(report.ignored_kinds) == {verdict.removeprefix("ignored "): 1}, said
    elif verdict == "schema change":
        assert report.schema_changes >= 1 and report.quarantined == 0, said
        assert _alarms(client).get("schema_change", 0) > alarms_before.get("schema_change", 0)
    elif verdict.startswith("quarantined "):
        wanted = verdict.removeprefix("quarantined ")
        assert report.quarantined == 1 and any(wanted in reason for reason in report.reasons), said
    else:
        raise AssertionError(f"unknown verdict {verdict!r} in the corpus")


def _alarms(client) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {kind: int(n) for kind, n in client.hgetall(ALARM_COUNTERS).items()}


def _shown(value: Any) -> Any:
    if hasattr(value, "isoformat") and hasattr(value, "hour"):
        return value.isoformat(timespec="milliseconds")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return None if value is None else (value if isinstance(value, int) else str(value))


@pytest.mark.parametrize(("input_format", "case"), _cases())
def test_a_corpus_case_gets_its_verdicts_and_its_rows(storage, service_env, redis_client, input_format: str,
                                                      case: dict[str, Any]) -> None:
    store = Storage(load_settings({**service_env, **case["env"]})) if case.get("env") else storage
    order_id, item_id = new_order_id("C"), random.randrange(10**12, 10**13)
    touched: set = set()
    try:
        for step in case["steps"]:
            alarms = _alarms(redis_client)
            report = accept_lines(store, redis_client, ACCEPTED, input_format, [_line(step, order_id, item_id)])
            _check_verdict(store, redis_client, step["verdict"], report, order_id, alarms)
            touched |= report.touched
        run_chains(store, redis_client, touched)
        with store.engine_for_order(order_id).connect() as connection:
            row = connection.execute(select(DwdOrder).where(DwdOrder.c.order_id == order_id)).first()
            meta = meta_table(store.shard_of(order_id))
            stored = {source: json.loads(content) for source, content in connection.execute(
                select(meta.c.source, meta.c.content).where(meta.c.order_id == order_id))}
        if "wide" in case:
            if case["wide"] is None:
                assert row is None
            else:
                assert row is not None, "no wide row"
                assert {column: _shown(getattr(row, column)) for column in case["wide"]} == case["wide"]
        for source, columns in (case.get("metadata") or {}).items():
            assert {column: stored[source][column] for column in columns} == columns
    finally:
        if store is not storage:
            store.dispose()


def test_a_replayed_truncate_is_kept_and_alarmed_once(storage, redis_client) -> None:
    document = yaml.safe_load((CORPUS / "canal.yaml").read_text())
    [truncate] = [c for c in document["cases"] if c["case"].startswith("TRUNCATE")]
    executed_ms = 1793611999000 + random.randrange(10**6)
    line = json.dumps({**truncate["steps"][0]["message"], "es": executed_ms})
    before = _alarms(redis_client).get("schema_change", 0)
    for _ in range(2):
        accept_lines(storage, redis_client, ACCEPTED, "canal", [line])
    with storage.shard_engine(0).connect() as connection:
        kept = connection.execute(select(SchemaChangeRecord.sql).where(
            (SchemaChangeRecord.source_table == "perf_record")
            & (SchemaChangeRecord.position == encode(Position(executed_ms))))).scalars().all()
    assert kept == ["TRUNCATE TABLE perf_record"]
    assert _alarms(redis_client).get("schema_change", 0) == before + 1
