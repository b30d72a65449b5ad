"""``tdc serve`` over HTTP: a real server process (Uvicorn) on the real MariaDB shards, PostgreSQL
warehouse, Redis and a RabbitMQ virtual host of this module's own.

Covers: every route refuses a request without credentials (pages redirect to the login), login
with hashed passwords, CSRF on every state-changing form, the receiver's per-source tokens,
per-item answers and caps, and the OpenAPI description checked by schemathesis.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from sqlalchemy import select

from chain.task_state import order_tasks
from demo.processes import free_port, start_console, stop
from models.orders import QuarantinedInput
from tests.conftest import _rabbitmqctl, env_of, new_order_id
from web.auth import hash_password

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"
TOKENS = {"payment": f"pay-{uuid.uuid4().hex}", "crm": f"crm-{uuid.uuid4().hex}"}
METRICS_TOKEN = f"metrics-{uuid.uuid4().hex}"
MAX_WRITES = 50
MAX_BYTES = 256 * 1024


@pytest.fixture(scope="module")
def served(storage, rabbitmq, tmp_path_factory) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The base URL of ``tdc serve`` on the session's storage, with one console user (ann)."""
    vhost = f"tdc-web-{uuid.uuid4().hex[:10]}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, urlsplit(rabbitmq).username or "guest", ".*", ".*", ".*")
    home = tmp_path_factory.mktemp("serve")
    port = free_port()
    env = {**os.environ, **env_of(storage),
           "TDC_BROKER_URL": urlunsplit(urlsplit(rabbitmq)._replace(path=f"/{vhost}")),
           "TDC_HOME": str(home),
           "TDC_WEB_USERS": f"ann:{hash_password(PASSWORD)}",
           "TDC_WEB_SECRET": uuid.uuid4().hex,
           "TDC_RECEIVER_TOKENS": ",".join(f"{source}={token}" for source, token in TOKENS.items()),
           "TDC_METRICS_TOKEN": METRICS_TOKEN,
           "TDC_RECEIVE_MAX_WRITES": str(MAX_WRITES), "TDC_RECEIVE_MAX_BYTES": str(MAX_BYTES)}
    process = start_console(env, home / "serve.log", port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop([process])
        _rabbitmqctl("delete_vhost", vhost)


@contextmanager
def login(base: str, user: str = "ann", password: str = PASSWORD) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, follow_redirects=False, timeout=30) as client:
        token = csrf_in(client.get("/login").text)
        response = client.post("/login", data={"username": user, "password": password, "csrf": token, "next": "/"})
        assert response.status_code == 303, response.text
        yield client


def csrf_in(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "the page has no CSRF field"
    return found.group(1)


PAGES = ["/", "/search", "/search?store_id=S1", "/orders/X1", "/orders?order_id=X1", "/failed", "/quarantine",
         "/reconcile", "/reconcile/1"]


def test_every_route_refuses_a_request_without_credentials(served: str) -> None:
    with httpx.Client(base_url=served, follow_redirects=False, timeout=30) as anonymous:
        for path in PAGES:
            response = anonymous.get(path)
            assert response.status_code == 303, path
            assert response.headers["location"].startswith("/login?next="), path
        for path in ("/failed/retry", "/logout"):
            assert anonymous.post(path, data={"csrf": "x"}).status_code in (303, 403), path
        assert anonymous.post("/failed/retry", data={"csrf": "x"}).status_code == 303
        for method, path in (("POST", "/api/v1/business-writes"), ("GET", "/metrics"), ("GET", "/openapi.json")):
            response = anonymous.request(method, path, content=b"[]")
            assert response.status_code == 401, path
            assert "detail" in response.json()
        # A wrong token is no better than none, and a receiver token does not open /metrics.
        assert anonymous.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert anonymous.get("/metrics", headers={"Authorization": f"Bearer {TOKENS['payment']}"}).status_code == 401
        assert anonymous.post("/api/v1/business-writes", content=b"[]",
                              headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).status_code == 401
        # The interactive API pages load scripts from a CDN: they are not served at all.
        for path in ("/docs", "/redoc"):
            assert anonymous.get(path).status_code in (303, 404), path


def test_login_checks_the_hashed_password_and_the_csrf_token(served: str) -> None:
    with httpx.Client(base_url=served, follow_redirects=False, timeout=30) as client:
        token = csrf_in(client.get("/login").text)
        wrong = client.post("/login", data={"username": "ann", "password": "wrong", "csrf": token})
        assert wrong.status_code == 401 and "wrong password" in wrong.text
        unknown = client.post("/login", data={"username": "bob", "password": PASSWORD, "csrf": token})
        assert unknown.status_code == 401
        forged = client.post("/login", data={"username": "ann", "password": PASSWORD, "csrf": "forged"})
        assert forged.status_code == 403
        assert client.get("/").status_code == 303
        # Only a path of this site is followed after the login.
        right = client.post("/login", data={"username": "ann", "password": PASSWORD, "csrf": token,
                                            "next": "//evil.example/x"})
        assert right.status_code == 303 and right.headers["location"] == "/"
    with login(served) as client:
        for path in ("/", "/search", "/failed", "/quarantine", "/reconcile"):
            response = client.get(path)
            assert response.status_code == 200, path
            assert "Log out" in response.text
        assert client.get("/orders/NOPE-" + uuid.uuid4().hex).status_code == 404
        # Logging out needs the session's CSRF token; afterwards the pages redirect again.
        assert client.post("/logout", data={"csrf": "forged"}).status_code == 403
        page = client.get("/failed").text
        assert client.post("/logout", data={"csrf": csrf_in(page)}).status_code == 303
        assert client.get("/failed").status_code == 303


def test_a_state_changing_form_without_the_sessions_csrf_token_is_refused(served: str) -> None:
    with login(served) as client, login(served) as other:
        theirs = csrf_in(other.get("/failed").text)
        assert client.post("/failed/retry", data={"failure": "X/PAY"}).status_code == 403
        assert client.post("/failed/retry", data={"failure": "X/PAY", "csrf": theirs}).status_code == 403
        mine = csrf_in(client.get("/failed").text)
        done = client.post("/failed/retry", data={"failure": "X/PAY", "csrf": mine})
        assert done.status_code == 303 and "0%20revived" in done.headers["location"]


def _write(order_id: str, key: str, amount: str = "12.50", source: str = "payment") -> dict[str, object]:
    return {"source": source, "order_id": order_id, "operation_type": "PAY", "unique_key": key,
            "payload": {"pay_txn_id": key, "pay_channel": "card", "paid_amount": amount,
                        "paid_at": "2026-11-20T10:00:00.000"},
            "occurred_at": "2026-11-20T10:00:00.000"}


def _post(base: str, body: object, source: str = "payment", raw: bytes | None = None) -> httpx.Response:
    content = raw if raw is not None else json.dumps(body).encode()
    return httpx.post(f"{base}/api/v1/business-writes", content=content, timeout=60,
                      headers={"Authorization": f"Bearer {TOKENS[source]}", "Content-Type": "application/json"})


def test_the_receiver_answers_each_item_and_stores_the_good_ones(served: str, storage) -> None:  # type: ignore[no-untyped-def]
    first, second = new_order_id("W"), new_order_id("W")
    good = [_write(first, f"k-{first}"), _write(second, f"k-{second}")]
    response = _post(served, good)
    assert response.status_code == 200, response.text
    assert [r["result"] for r in response.json()["results"]] == ["accepted", "accepted"]
    bad_amount = _write(new_order_id("W"), "k-bad", amount="-3.00")
    batch = [good[0], "not an object", {"source": "payment", "order_id": first}, bad_amount, good[1]]
    again = _post(served, batch)
    assert again.status_code == 200, again.text
    results = again.json()["results"]
    assert [r["result"] for r in results] == ["duplicate", "quarantined", "quarantined", "quarantined", "duplicate"]
    assert [r["index"] for r in results] == [0, 1, 2, 3, 4]
    assert results[0]["unique_key"] == f"k-{first}"
    assert all(r["reason"] for r in results[1:4])
    assert again.json()["counts"] == {"duplicate": 2, "quarantined": 3}
    # The good writes are stored with their PAY tasks; the malformed ones are kept in quarantine.
    for order_id in (first, second):
        with storage.engine_for_order(order_id).connect() as connection:
            tasks = order_tasks(connection, storage.shard_of(order_id), order_id)
        assert [t.operation_type for t in tasks] == ["PAY"], order_id
    with storage.shard_engine(0).connect() as connection:
        kept = connection.execute(select(QuarantinedInput.raw).where(
            QuarantinedInput.raw.contains('"not an object"'))).all()
    assert kept, "the item that is not an object was not kept in quarantine"
    # A newer write of the same key with other content is a correction: accepted again.
    changed = _write(first, f"k-{first}", amount="13.00")
    changed["occurred_at"] = "2026-11-20T10:05:00.000"
    assert [r["result"] for r in _post(served, [changed]).json()["results"]] == ["accepted"]
    # The first version again: older by event time and different, with no source position to
    # order the two by, it is kept in quarantine with the reason, not applied and not dropped.
    older = _post(served, [good[0]]).json()["results"]
    assert [r["result"] for r in older] == ["quarantined"] and "ambiguous" in older[0]["reason"]


def test_a_receiver_token_writes_for_its_own_source_only(served: str, storage) -> None:  # type: ignore[no-untyped-def]
    order_id = new_order_id("W")
    response = _post(served, [_write(order_id, f"k-{order_id}", source="payment")], source="crm")
    assert response.status_code == 403
    assert "crm" in response.json()["detail"] and "payment" in response.json()["reasons"][0]
    mixed = _post(served, [_write(order_id, "own", source="crm"), _write(order_id, "other", source="payment")],
                  source="crm")
    assert mixed.status_code == 403
    with storage.engine_for_order(order_id).connect() as connection:
        assert order_tasks(connection, storage.shard_of(order_id), order_id) == []


def test_the_receiver_refuses_bodies_it_cannot_take(served: str) -> None:
    assert _post(served, None, raw=b"{not json").status_code == 400
    not_a_list = _post(served, {"source": "payment"})
    assert not_a_list.status_code == 422 and "list" in not_a_list.json()["detail"]
    too_many = _post(served, [_write("W", f"k{n}") for n in range(MAX_WRITES + 1)])
    assert too_many.status_code == 413 and "TDC_RECEIVE_MAX_WRITES" in too_many.json()["detail"]
    big = _write("W", "big")
    big["payload"] = {"note": "x" * MAX_BYTES}
    too_big = _post(served, [big])
    assert too_big.status_code == 413 and "TDC_RECEIVE_MAX_BYTES" in too_big.json()["detail"]


def test_a_write_too_large_to_store_is_quarantined_alone(served: str) -> None:
    first, second = new_order_id("W"), new_order_id("W")
    large = _write(first, f"k-{first}")
    large["payload"] = {**large["payload"], "note": "x" * 70_000}  # type: ignore[dict-item]
    response = _post(served, [large, _write(second, f"k-{second}")])
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["result"] for r in results] == ["quarantined", "accepted"]
    assert "at most 65535 are stored per write" in results[0]["reason"]


def test_the_openapi_description_holds_for_every_response(served: str, tmp_path: Path) -> None:
    """schemathesis generates requests from /openapi.json, valid and not, and checks that no
    response is a 5xx and that every response conforms to the description.

    One check is left out for the receiver: ``negative_data_rejection`` expects a request with a
    malformed *item* to be refused whole.  The receiver's contract is the opposite on purpose: a
    malformed item is quarantined and answered as such, and never fails its neighbours (the
    per-item answers are checked against the description like every other response)."""
    import subprocess
    import sys

    described = httpx.get(f"{served}/openapi.json", headers={"Authorization": f"Bearer {TOKENS['payment']}"})
    assert described.status_code == 200
    assert "/api/v1/business-writes" in described.json()["paths"]
    spec = tmp_path / "openapi.json"
    spec.write_text(described.text)
    for path, token, skipped in (("/api/v1/business-writes", TOKENS["payment"], ["--exclude-checks",
                                                                                  "negative_data_rejection"]),
                                 ("/metrics", METRICS_TOKEN, [])):
        result = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "run", str(spec), "--url", served, "--include-path", path,
             "--header", f"Authorization: Bearer {token}", "--checks", "all", "--max-examples", "40",
             "--seed", "1", "--suppress-health-check", "all", *skipped],
            capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
