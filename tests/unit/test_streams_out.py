"""Pure parts of the changelog and the events: publish rounds, event differences and ids, images,
sink URLs and their settings."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from models.changelog import image
from settings import SettingsError, load_settings
from streams.events import Change, event_id, order_events
from streams.outbox import change_message, rounds
from streams.sinks import KafkaSink, kafka_config, open_sink, split_url

AT = dt.datetime(2026, 11, 2, 10, 0, 0, 123456)


def _image(status: int = 20, paid: bool = True, amount: str = "30.00", refund: int = 0, lines: int = 2) -> dict:
    order = {"order_id": "O1", "store_id": "S001", "member_id": "M1", "channel": "app", "status": status,
             "paid_at": "2026-11-02T09:00:00.000" if paid else None, "pay_amount": amount, "total_amount": amount,
             "discount_amount": "0.00", "pay_channel": "card", "pay_txn_id": "T1", "biz_date": "2026-11-02",
             "created_at": "2026-11-02T08:00:00.000", "item_count": lines, "version": 3}
    items = [{"item_id": n, "sku_id": f"K{n}", "quantity": 1, "unit_price": "15.00", "amount": "15.00",
              "refund_quantity": refund if n == 1 else 0, "refund_amount": "15.00" if refund and n == 1 else "0.00"}
             for n in range(1, lines + 1)]
    return {"order": order, "items": items}


def _change(before: dict | None, after: dict, version: int = 4, change_id: int = 1, order: str = "O1") -> Change:
    return Change(change_id, order, version, "update" if before else "insert", "PAY", before, after, AT)


def test_an_orders_changes_go_out_in_successive_rounds_in_version_order() -> None:
    changes = [_change(None, _image(), 1, 1, "A"), _change(None, _image(), 1, 2, "B"),
               _change(None, _image(), 2, 3, "A"), _change(None, _image(), 3, 4, "A"),
               _change(None, _image(), 2, 5, "B"), _change(None, _image(), 1, 6, "C")]
    found = [[(c.order_id, c.version) for c in batch] for batch in rounds(changes)]
    assert found == [[("A", 1), ("B", 1), ("C", 1)], [("A", 2), ("B", 2)], [("A", 3)]]


def test_payment_makes_one_create_per_line_and_a_correction_updates_the_same_ids() -> None:
    paid = order_events(_change(_image(status=10, paid=False), _image()))
    assert [(e.type, e.op) for e in paid] == [("PayOrderDetail", "create")] * 2
    assert {e.event_id for e in paid} == {event_id("PayOrderDetail", "O1", "1"), event_id("PayOrderDetail", "O1", "2")}
    corrected = order_events(_change(_image(), _image(amount="31.00"), version=5))
    assert [(e.event_id, e.op, e.version) for e in corrected] == [(e.event_id, "update", 5) for e in paid]
    assert order_events(_change(_image(), _image())) == []  # nothing the events carry changed


def test_returns_and_cancellations_are_their_own_facts() -> None:
    returned = order_events(_change(_image(), _image(refund=1)))
    assert [(e.type, e.op, e.data["refund_quantity"]) for e in returned] == [("ApplyReturn", "create", 1)]
    again = order_events(_change(_image(refund=1), _image(refund=2)))
    assert [(e.type, e.op, e.event_id) for e in again] == [("ApplyReturn", "update", returned[0].event_id)]
    cancelled = order_events(_change(_image(status=10, paid=False), _image(status=50, paid=False)))
    assert [(e.type, e.op, e.event_id) for e in cancelled] == [("CancelOrder", "create", event_id("CancelOrder", "O1"))]
    gone = order_events(_change(_image(lines=2), _image(lines=1)))
    assert [(e.type, e.op, e.data["item_id"]) for e in gone] == [("PayOrderDetail", "delete", 2)]


def test_an_event_message_is_deduplicated_on_its_id_and_version() -> None:
    event = order_events(_change(_image(status=10, paid=False), _image()))[0]
    message = event.message()
    assert message.dedup_id == f"{event.event_id}:4" and message.key == "O1" and message.topic == "PayOrderDetail"
    assert change_message(_change(None, _image())).dedup_id == "O1:4"


def test_images_hold_money_with_two_decimals_and_times_to_the_millisecond() -> None:
    order = {"order_id": "O1", "pay_amount": Decimal("12.5"), "paid_at": AT, "biz_date": dt.date(2026, 11, 2),
             "status": 20, "source_digest": 7}
    made = image(order, [{"item_id": 2, "amount": "3"}, {"item_id": 1, "amount": Decimal("1.10")}], "gqsh")
    assert made["order"]["pay_amount"] == "12.50" and made["order"]["paid_at"] == "2026-11-02T10:00:00.123"
    assert made["order"]["biz_date"] == "2026-11-02" and "source_digest" not in made["order"]
    assert [(i["item_id"], i["amount"]) for i in made["items"]] == [(1, "1.10"), (2, "3.00")]


def test_sink_urls_lose_tdcs_own_parameters_only() -> None:
    assert split_url("redis://h:6379/9?stream=s&maxlen=10&ssl_cert_reqs=none") == (
        "redis://h:6379/9?ssl_cert_reqs=none", {"stream": "s", "maxlen": "10"})
    assert split_url("amqp://u:p@h/v?exchange=x&queue=q") == ("amqp://u:p@h/v", {"exchange": "x", "queue": "q"})


@pytest.mark.parametrize(("env", "message"), [
    ({"TDC_CHANGELOG_URL": "redis://h/0"}, "TDC_CHANGELOG_URL: a redis:// sink needs ?stream=NAME"),
    ({"TDC_EVENTS_URL": "nats://h:4222?stream=x"}, "TDC_EVENTS_URL: a nats:// sink needs ?subject=NAME"),
    ({"TDC_EVENTS_URL": "amqp://h/"}, "needs ?exchange=NAME"),
    ({"TDC_CHANGELOG_URL": "kafka://?topic=t"}, "TDC_CHANGELOG_URL: a kafka:// sink needs a host"),
    ({"TDC_CHANGELOG_URL": "http://secret:pw@h/?stream=x"}, "TDC_CHANGELOG_URL: http:// is not a sink"),
    ({"TDC_CHANGELOG_URL": "nats://h?subject=a", "TDC_EVENTS_URL": "nats://h?subject=a"}, "same stream"),
    ({"TDC_CHANGELOG_RETENTION_HOURS": "0"}, "TDC_CHANGELOG_RETENTION_HOURS='0' must be positive"),
    ({"TDC_CHANGELOG_BATCH": "many"}, "TDC_CHANGELOG_BATCH='many' is not a int"),
])
def test_sink_settings_are_refused_with_the_variable_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("?", r"\?").replace("(", r"\(")) as refused:
        load_settings(env)
    assert "pw" not in str(refused.value)


def test_sink_settings_default_to_nothing_published() -> None:
    settings = load_settings({})
    assert (settings.changelog_url, settings.events_url, settings.changelog_outbox) == (None, None, False)
    assert (settings.changelog_retention_hours, settings.changelog_batch) == (72.0, 500)
    assert load_settings({"TDC_EVENTS_URL": "kafka://k:9092?topic=e"}).changelog_outbox


def test_a_kafka_url_with_a_login_logs_in_with_sasl(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a producer that keeps its settings instead of connecting
    made: list[dict] = []
    monkeypatch.setattr("confluent_kafka.Producer", lambda config: made.append(config))
    # When kafka:// sinks with a login are opened
    sink = open_sink("kafka://tdc:p%40ss@k1:9092,k2:9092?topic=changes", "change")
    open_sink("kafka://tdc:pw@k1:9092?topic=events&sasl_mechanism=scram-sha-512&security_protocol=SASL_PLAINTEXT",
              "event")
    # Then the login becomes SASL settings (SASL_SSL and PLAIN unless told), nothing is dropped
    assert isinstance(sink, KafkaSink) and sink.topic == "changes"
    assert {k: made[0][k] for k in ("bootstrap.servers", "security.protocol", "sasl.mechanisms", "sasl.username",
                                    "sasl.password")} == {
        "bootstrap.servers": "k1:9092,k2:9092", "security.protocol": "SASL_SSL", "sasl.mechanisms": "PLAIN",
        "sasl.username": "tdc", "sasl.password": "p@ss"}
    assert (made[1]["security.protocol"], made[1]["sasl.mechanisms"]) == ("SASL_PLAINTEXT", "SCRAM-SHA-512")
    assert "security.protocol" not in kafka_config("kafka://k1:9092?topic=t", "TDC_CHANGELOG_URL")


@pytest.mark.parametrize(("url", "field", "message"), [
    ("kafka://tdc@k:9092?topic=t", "change", "TDC_CHANGELOG_URL: a kafka:// sink with a user needs its password"),
    ("kafka://tdc:secret@k:9092?topic=t&sasl_mechanism=GSSAPI", "event",
     "TDC_EVENTS_URL: sasl_mechanism must be one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
    ("kafka://tdc:secret@k:9092?topic=t&security_protocol=SSL", "change",
     "TDC_CHANGELOG_URL: security_protocol must be one of SASL_SSL, SASL_PLAINTEXT"),
    ("kafka://k:9092?topic=t&sasl_mechanism=PLAIN", "event", "TDC_EVENTS_URL: sasl_mechanism and security_protocol"),
])
def test_a_kafka_login_tdc_cannot_use_is_refused_naming_the_variable(url: str, field: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as refused:
        open_sink(url, field)
    assert "secret" not in str(refused.value)


def test_a_flow_publishes_only_the_events_it_declares_and_its_changes_name_it() -> None:
    import json

    # A till sale's image with the online orders' column names would make every kind of event
    sale = _change(_image(status=10, paid=False), _image(refund=1), order="pos:PO1")
    assert order_events(sale) == []
    assert sorted(e.type for e in order_events(_change(_image(status=10, paid=False), _image(refund=1)))) == [
        "ApplyReturn", "PayOrderDetail", "PayOrderDetail"]
    assert json.loads(change_message(sale).body)["flow"] == "pos"
    assert json.loads(change_message(_change(None, _image())).body)["flow"] == "gqsh"


def test_an_image_keeps_each_amount_at_its_columns_places() -> None:
    entry = {"FENTRYID": 71, "FID": 7, "FQTY": Decimal("2.5"), "FAMOUNT": Decimal("1234567.1234567891")}
    made = image({"FID": 7, "FQTY": Decimal("2.5")}, [entry], "sal_order")
    assert made["items"][0]["FAMOUNT"] == "1234567.1234567891"
    assert made["items"][0]["FQTY"] == "2.5000000000"
    assert made["order"]["FID"] == 7
