"""Index documents, mappings, query bodies and aliases made from each flow's declaration: the
online orders' exactly as they were written by hand before, the other flows' from their own
fields."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from demo.tables import ITEM_TABLE, ORDER_TABLE
from flows.declared import BY_NAME
from models.digests import kind_of
from search.documents import search_document
from search.query import OrderQuery, QueryError
from settings import load_settings

#: The online orders' index as it was written for them alone (before declarations drove it).
_ITEMS = ("item_id", "sku_id", "sku_name", "category", "quantity", "unit_price", "amount", "refund_quantity",
          "refund_amount", "status")
_TIMES = "strict_date_hour_minute_second_fraction||strict_date_hour_minute_second"
_KINDS: dict[str, dict[str, Any]] = {
    "text": {"type": "keyword"}, "int": {"type": "long"}, "money": {"type": "scaled_float", "scaling_factor": 100},
    "date": {"type": "date", "format": "strict_date"}, "time": {"type": "date", "format": _TIMES}}


def _before(name: str, kind: str) -> dict[str, Any]:
    if name in ("store_name", "sku_name"):
        return {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}
    return dict(_KINDS[kind])


def test_the_online_orders_mappings_and_documents_are_as_before() -> None:
    # Given the mappings and a document as they were made by hand for the online orders
    before = {c.name: _before(c.name, kind_of(c)) for c in ORDER_TABLE.columns if c.name != "source_digest"}
    before["items"] = {"type": "nested", "properties": {
        c.name: _before(c.name, kind_of(c)) for c in ITEM_TABLE.columns if c.name in _ITEMS}}
    row = {c.name: None for c in ORDER_TABLE.columns} | {
        "order_id": "D1", "store_id": "S1", "status": 20, "pay_amount": Decimal("12.50"), "version": 3,
        "created_at": dt.datetime(2026, 11, 1, 8, 0, 1, 250000), "biz_date": dt.date(2026, 11, 1),
        "source_digest": 7}
    lines = [{c.name: None for c in ITEM_TABLE.columns} | {"item_id": i, "order_id": "D1", "sku_id": f"K{i}",
                                                           "amount": Decimal("6.25")} for i in (2, 1)]
    # Then the declaration gives the same mappings, document and found order
    online = search_document(BY_NAME["gqsh"])
    assert online.mappings() == {"dynamic": "strict", "properties": before}
    doc = online.document(row, lines)
    assert doc == {k: v for k, v in row.items() if k != "source_digest"} | {
        "pay_amount": "12.50", "created_at": "2026-11-01T08:00:01.250", "biz_date": "2026-11-01",
        "items": [{name: lines[1].get(name) for name in _ITEMS} | {"amount": "6.25"},
                  {name: lines[0].get(name) for name in _ITEMS} | {"amount": "6.25"}]}
    found = online.found(doc)
    assert found["pay_amount"] == Decimal("12.50") and found["created_at"] == row["created_at"]
    assert [i["item_id"] for i in found["items"]] == [1, 2] and found["items"][0]["amount"] == Decimal("6.25")


def test_the_online_orders_query_body_is_as_before() -> None:
    query = OrderQuery(order_id="D1", store_id="S1", status=20, sku_id="K1", min_amount=Decimal("5"),
                       date_from=dt.date(2026, 11, 1), limit=5)
    assert query.elasticsearch() == {
        "query": {"bool": {"filter": [
            {"term": {"order_id": "D1"}}, {"term": {"store_id": "S1"}}, {"term": {"status": 20}},
            {"range": {"pay_amount": {"gte": "5"}}}, {"range": {"biz_date": {"gte": "2026-11-01"}}},
            {"nested": {"path": "items", "query": {"term": {"items.sku_id": "K1"}}}}]}},
        "sort": [{"created_at": {"order": "desc"}}, {"order_id": {"order": "desc"}}], "size": 5}


def test_other_flows_search_their_own_fields_and_refuse_conditions_they_lack() -> None:
    # Given a till sale's query and a Kingdee order's
    till = OrderQuery(order_id="pos:PO1", store_id="S1", sku_id="K1", max_amount=Decimal("9.5"))
    kingdee = OrderQuery(flow="sal_order", member_id="300004", sku_id="M01")
    # Then each filters on its flow's fields (the id without its prefix), newest by its own time
    assert till.elasticsearch() == {
        "query": {"bool": {"filter": [
            {"term": {"order_no": "PO1"}}, {"term": {"store_code": "S1"}}, {"range": {"pay_amount": {"lte": "9.5"}}},
            {"nested": {"path": "items", "query": {"term": {"items.sku_code": "K1"}}}}]}},
        "sort": [{"order_time": {"order": "desc"}}, {"order_no": {"order": "desc"}}], "size": 50}
    assert kingdee.elasticsearch()["query"]["bool"]["filter"] == [
        {"term": {"FCUSTID": 300004}},
        {"nested": {"path": "entries", "query": {"term": {"entries.material_number": "M01"}}}}]
    assert search_document(BY_NAME["sal_order"]).key_of("sal_order:42") == 42
    # And a condition the flow does not declare, a flow without an index, an unknown flow are refused
    for query, message in ((OrderQuery(flow="sal_order", channel="app"), "flow 'sal_order' has no search "
                                                                          "condition 'channel'"),
                           (OrderQuery(flow="stk_inventory"), "flow 'stk_inventory' declares no index document"),
                           (OrderQuery(flow="nope"), "no flow 'nope'")):
        with pytest.raises(QueryError, match=message):
            query.document()
    # And text for a number column is refused before Elasticsearch (a 400) or a database sees it
    for query, message in ((OrderQuery(flow="sal_order", member_id="abc"), "FCUSTID 'abc' is not a whole number"),
                           (OrderQuery(order_id="sal_order:abc"), "FID 'abc' is not a whole number")):
        with pytest.raises(QueryError, match=message):
            query.elasticsearch()


def test_decimals_keep_their_scale_and_wide_ones_are_doubles() -> None:
    # Given the till sales' and Kingdee orders' mappings
    pos = search_document(BY_NAME["pos"]).mappings()["properties"]
    kingdee = search_document(BY_NAME["sal_order"])
    # Then weighed quantities keep three decimals, Kingdee's decimal(23,10) are doubles, names are text
    assert pos["items"]["properties"]["quantity"] == {"type": "scaled_float", "scaling_factor": 1000}
    assert pos["pay_amount"] == {"type": "scaled_float", "scaling_factor": 100}
    assert pos["cashier_name"]["type"] == "text" and pos["items"]["properties"]["sku_name"]["type"] == "text"
    assert kingdee.mappings()["properties"]["FALLAMOUNT"] == {"type": "double"}
    # And found values come back at their column's scale
    assert kingdee.found({"FALLAMOUNT": "5284.69182", "entries": [{"FQTY": "1.5"}]}) == {
        "FALLAMOUNT": Decimal("5284.6918200000"), "entries": [{"FQTY": Decimal("1.5000000000")}]}


def test_tdc_es_alias_stands_for_the_stem_of_every_declared_alias() -> None:
    default, renamed = load_settings({}), load_settings({"TDC_ES_ALIAS": "acme"})
    aliases = {name: (search_document(BY_NAME[name]).alias(default), search_document(BY_NAME[name]).alias(renamed))
               for name in ("gqsh", "pos", "sal_order")}
    assert aliases == {"gqsh": ("tdc-orders", "acme"), "pos": ("tdc-orders-pos", "acme-pos"),
                       "sal_order": ("tdc-orders-sal-order", "acme-sal-order")}
    # An alias declared outside the stem is used as declared
    pos = BY_NAME["pos"]
    assert pos.index is not None
    other = replace(pos, index=replace(pos.index, index="till-sales"))
    from search.documents import SearchDocument

    assert SearchDocument.of(other).alias(renamed) == "till-sales"


def test_a_condition_on_a_free_text_field_is_matched_on_its_keyword() -> None:
    from search.documents import SearchDocument

    pos = BY_NAME["pos"]
    assert pos.index is not None
    by_name = SearchDocument.of(replace(pos, index=replace(pos.index, conditions={
        "store_id": "store_name", "sku_id": "items.sku_name"})))
    body = OrderQuery(flow="pos", store_id="Store 4", sku_id="Milk").elasticsearch(by_name)
    assert body["query"]["bool"]["filter"] == [
        {"term": {"store_name.keyword": "Store 4"}},
        {"nested": {"path": "items", "query": {"term": {"items.sku_name.keyword": "Milk"}}}}]
