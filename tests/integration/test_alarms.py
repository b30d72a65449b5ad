"""Alarms never hold or break the work that raises them: the webhook is posted off the hot path,
and a receiver that hangs or answers garbage only costs a log line."""

import json
import socket
import threading

import pytest

from reliability.alarms import ALARM_COUNTERS, flush_alarms, raise_alarm
from settings import get_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def receiver(monkeypatch):  # type: ignore[no-untyped-def]
    """A raw TCP receiver on localhost that answers only when the test says so, with what it says."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    state = {"answer": threading.Event(), "reply": b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
             "bodies": []}

    def serve() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            with connection:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += connection.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                while len(body) < length:
                    body += connection.recv(65536)
                state["bodies"].append(json.loads(body))
                state["answer"].wait(30)
                connection.sendall(state["reply"])

    threading.Thread(target=serve, daemon=True).start()
    monkeypatch.setenv("TDC_ALARM_WEBHOOK", f"http://127.0.0.1:{server.getsockname()[1]}/alarms")
    get_settings.cache_clear()
    yield state
    state["answer"].set()
    server.close()
    get_settings.cache_clear()


def test_raising_an_alarm_does_not_wait_for_the_webhook(receiver, redis_client) -> None:
    # Given a webhook receiver that does not answer until the test lets it
    before = int(redis_client.hget(ALARM_COUNTERS, "test_slow_webhook") or 0)
    # When an alarm is raised (the receiver is still holding its answer when it returns)
    raise_alarm(redis_client, "test_slow_webhook", "slow receiver")
    counted = int(redis_client.hget(ALARM_COUNTERS, "test_slow_webhook") or 0)
    receiver["answer"].set()
    # Then it was counted at once, and delivered once the receiver answered (a synchronous post
    # would have timed out before the answer was allowed, and not been delivered)
    assert counted == before + 1
    assert flush_alarms(30)
    assert [b["message"] for b in receiver["bodies"]] == ["slow receiver"]
    from reliability.alarms import _sender
    assert _sender().delivered >= 1


def test_a_webhook_answering_garbage_does_not_break_the_caller(receiver, redis_client) -> None:
    # Given a receiver that answers with something that is not HTTP at all
    receiver["reply"] = b"garbage\r\n\r\n"
    receiver["answer"].set()
    # When alarms are raised, Then neither raises, both are posted, and the failure is only logged
    raise_alarm(redis_client, "test_bad_webhook", "first")
    raise_alarm(redis_client, "test_bad_webhook", "second")
    assert flush_alarms(30)
    assert [b["message"] for b in receiver["bodies"]] == ["first", "second"]
