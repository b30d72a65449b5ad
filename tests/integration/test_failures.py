"""The failure path on real MariaDB, Redis and RabbitMQ: a task whose predecessor never comes
ends in the failed-task table with an alarm (log, counter, webhook), `tdc failed` shows and
retries it, and it completes by itself when the predecessor arrives; a step that gives up
releases its locks."""

import datetime as dt
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from chain.steps import give_up, valid_keys
from chain.task_state import load_task
from chain.wide_rows import read_orders
from flows.registry import ACCEPTED as ORDER_FLOW
from models.sharded import TaskStatus
from models.storage import Storage
from reliability.alarms import ALARM_COUNTERS, flush_alarms
from reliability.failures import get_failure, list_failures
from reliability.leases import OrderLeases, lease_name
from settings import get_settings, load_settings
from tests.conftest import new_order_id
from tests.factories import T0, OrderHeaderFactory, OrderItemFactory, PaymentWriteFactory, business, canal
from tests.integration.helpers import claimed_keys, ingest, run_chains, run_tdc, tdc_output

pytestmark = pytest.mark.integration


@pytest.fixture
def webhook(monkeypatch):  # type: ignore[no-untyped-def]
    """A real HTTP server on localhost collecting the alarms POSTed to it."""
    received: list[dict] = []

    class Collect(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
            return None

    server = HTTPServer(("127.0.0.1", 0), Collect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("TDC_ALARM_WEBHOOK", f"http://127.0.0.1:{server.server_port}/alarms?token=t")
    get_settings.cache_clear()
    yield received
    server.shutdown()
    get_settings.cache_clear()


@pytest.fixture
def impatient(service_env, storage):  # type: ignore[no-untyped-def]
    """The same databases, with four attempts 20 ms apart: a wait fails in well under a second."""
    store = Storage(load_settings({**service_env, "TDC_MAX_ATTEMPTS": "4", "TDC_RETRY_BASE_SECONDS": "0.02"}))
    yield store
    store.dispose()


def _task(storage, order_id: str, operation: str):  # type: ignore[no-untyped-def]
    with storage.engine_for_order(order_id).connect() as connection:
        return load_task(connection, storage.shard_of(order_id), order_id, operation)


def _until_failed(storage, client, order_id: str, operation: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 20
    while _task(storage, order_id, operation).status != TaskStatus.FAILED:
        assert time.monotonic() < deadline, _task(storage, order_id, operation)
        run_chains(storage, client, [])
        time.sleep(0.05)


def test_a_task_whose_predecessor_never_comes_fails_alarms_and_completes_when_it_arrives(
        impatient, redis_client, webhook) -> None:
    # Given a paid header and its payment, but never the order line SUBMIT needs
    header = OrderHeaderFactory(status=20, paid_at=T0 + dt.timedelta(minutes=2))
    order_id = header["order_id"]
    alarms_before = int(redis_client.hget(ALARM_COUNTERS, "task_failed") or 0)
    touched = ingest(impatient, redis_client, ORDER_FLOW, "canal", [canal("gqsh_order", header)]).touched
    touched |= ingest(impatient, redis_client, ORDER_FLOW, "business",
                      [business(PaymentWriteFactory(order_id=order_id))]).touched
    run_chains(impatient, redis_client, touched)
    # When their attempts run out
    _until_failed(impatient, redis_client, order_id, "PAY")
    _until_failed(impatient, redis_client, order_id, "SUBMIT")
    # Then both are in the failed-task table with reason, attempts and sources, and alarmed
    pay = get_failure(impatient, order_id, "PAY")
    assert pay is not None and pay["reason"] == "waiting for SUBMIT" and pay["attempts"] == 4
    assert [a["attempt"] for a in pay["history"]] == [1, 2, 3, 4]
    assert any(source.startswith("business:payment:") for source in pay["sources"])
    assert get_failure(impatient, order_id, "SUBMIT")["reason"] == "0 of 1 gqsh_order_item rows have arrived"
    assert int(redis_client.hget(ALARM_COUNTERS, "task_failed")) >= alarms_before + 2
    assert flush_alarms(10)
    posted = [a for a in webhook if a.get("order_id") == order_id]
    assert {(a["alarm"], a["operation"]) for a in posted} == {("task_failed", "PAY"), ("task_failed", "SUBMIT")}
    assert f"{order_id}/PAY" in [f["id"] for f in list_failures(impatient)]
    # And when the line finally arrives, SUBMIT revives, and PAY after it, to completion
    run_chains(impatient, redis_client, ingest(impatient, redis_client, ORDER_FLOW, "canal", [
        canal("gqsh_order_item", OrderItemFactory(order_id=order_id))]).touched)
    assert _task(impatient, order_id, "SUBMIT").status == TaskStatus.DONE
    assert _task(impatient, order_id, "PAY").status == TaskStatus.DONE
    assert read_orders(impatient, [order_id])[0][order_id]["status"] == 20
    assert get_failure(impatient, order_id, "PAY")["resolved_at"] is not None
    assert f"{order_id}/PAY" not in [f["id"] for f in list_failures(impatient)]


def test_a_step_that_gives_up_counts_an_attempt_and_releases_its_locks(impatient, redis_client) -> None:
    # Given a running task whose chain holds its lock
    header = OrderHeaderFactory()
    order_id = header["order_id"]
    ingest(impatient, redis_client, ORDER_FLOW, "canal", [canal("gqsh_order", header)])
    leases = OrderLeases(redis_client, impatient.settings)
    keys = claimed_keys(impatient, leases, [(order_id, "SUBMIT")])
    # When its step gives up (retries exhausted) four times, with a poison key beside it
    for _ in range(4):
        give_up(impatient, leases, impatient.settings, keys + [{"order_id": 7}, "junk"], "tdc.merge gave up: boom")
        assert not redis_client.exists(lease_name(order_id))
        keys = claimed_keys(impatient, leases, [(order_id, "SUBMIT")])
    # Then it waited three times and failed on the fourth, with the step's error as the reason
    task = _task(impatient, order_id, "SUBMIT")
    assert (task.status, task.attempts) == (TaskStatus.FAILED, 4)
    assert get_failure(impatient, order_id, "SUBMIT")["last_error"] == "tdc.merge gave up: boom"


def test_valid_keys_drops_malformed_keys_and_keeps_the_rest() -> None:
    good = {"order_id": new_order_id(), "operation_type": "PAY", "token": 17}
    untokened = {"order_id": new_order_id(), "operation_type": "PAY", "token": "t"}
    assert valid_keys([good, {"order_id": 1, "operation_type": "PAY"}, {"order_id": "x", "operation_type": "EAT"},
                       None, untokened]) == [good]
    assert valid_keys("not a list") == []


def test_tdc_failed_lists_shows_and_retries_a_failure(service_env, impatient, redis_client) -> None:
    # Given a SUBMIT that failed waiting for its order line
    header = OrderHeaderFactory()
    order_id = header["order_id"]
    run_chains(impatient, redis_client,
               ingest(impatient, redis_client, ORDER_FLOW, "canal", [canal("gqsh_order", header)]).touched)
    _until_failed(impatient, redis_client, order_id, "SUBMIT")
    # When a user lists, shows and retries it
    listing = tdc_output(service_env, "failed", "list", "--limit", "1000")
    shown = tdc_output(service_env, "failed", "show", f"{order_id}/SUBMIT")
    retried = tdc_output(service_env, "failed", "retry", f"{order_id}/submit", "NOPE/PAY")
    # Then each says what a user needs, and the task is due again with fresh attempts
    assert f"{order_id}/SUBMIT" in listing and "0 of 1 gqsh_order_item rows have arrived" in listing
    assert "attempt 4: 0 of 1 gqsh_order_item rows have arrived" in shown and "canal:gqsh_order:" in shown
    assert "1 failed tasks revived, 1 submitted" in retried and "NOPE/PAY: not failed" in retried
    task = _task(impatient, order_id, "SUBMIT")
    assert (task.status, task.attempts) == (TaskStatus.PENDING, 0)
    assert run_tdc(service_env, "failed", "show", "no-slash").returncode == 2
    assert run_tdc(service_env, "failed", "retry").returncode == 2


