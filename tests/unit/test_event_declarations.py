"""Checking declared events (``PublishedEvent``): every table, key, field and condition named, a
first-of event's needs, an event type one flow alone publishes."""

from __future__ import annotations

from dataclasses import replace

from flows.declaration import AnyOf, Field, FirstOf, PublishedEvent, Where
from flows.declared import DECLARATIONS
from flows.declared.gqsh import GQSH
from flows.declared.sal_order import SAL_ORDER
from flows.validation import problems, problems_across

DOC, ENTRY = "dwd_t_sal_order", "dwd_t_sal_order_entry"
AUDITED = (Where("FDOCUMENTSTATUS", "=", "C"),)


def _with(*events: PublishedEvent) -> list[str]:
    """The problems of sal_order publishing ``events``."""
    return problems(replace(SAL_ORDER, events=events))


def test_the_declared_events_hold_together() -> None:
    assert [e.name for e in SAL_ORDER.events] == ["SalesOrderAudited", "SalesOrderEntryAudited",
                                                  "FirstCustomerOrder"]
    assert all(problems(flow) == [] for flow in DECLARATIONS) and problems_across(DECLARATIONS) == []


def test_an_unknown_table_key_or_field_is_named() -> None:
    assert _with(PublishedEvent("Audited", "dwd_sal_order", key=("FID",), fields=("FID",))) == [
        "flow 'sal_order': event 'Audited' table 'dwd_sal_order': no wide table 'dwd_sal_order'"]
    assert _with(PublishedEvent("Audited", DOC, key=("FIDD",), fields=("FBILLNO", "FAMOUNTT", Field("no", "FNO")))) == [
        f"flow 'sal_order': event 'Audited' key 'FIDD': no column 'FIDD' in wide table '{DOC}'",
        f"flow 'sal_order': event 'Audited' field 'FAMOUNTT': no column 'FAMOUNTT' in wide table '{DOC}'",
        f"flow 'sal_order': event 'Audited' field 'no': no column 'FNO' in wide table '{DOC}'"]
    assert _with(PublishedEvent("Audited", DOC, key=(), fields=("FID", "FID"))) == [
        "flow 'sal_order': event 'Audited' key: no key columns (the natural key the event id is made from)",
        "flow 'sal_order': event 'Audited' field 'FID': carried 2 times"]


def test_a_child_events_root_columns_are_named_by_the_root_table() -> None:
    broken = PublishedEvent("Entry", ENTRY, key=(f"{DOC}.FID", "FENTRYID"),
                            fields=(f"{DOC}.FBILLNO", f"{DOC}.FNOPE", "dwd_order.order_id", "FQTY", "FQTY2"))
    assert _with(broken) == [
        f"flow 'sal_order': event 'Entry' field '{DOC}.FNOPE': no column 'FNOPE' in wide table '{DOC}'",
        f"flow 'sal_order': event 'Entry' field 'dwd_order.order_id': only the root '{DOC}' is named "
        "(root_table.column), not 'dwd_order'",
        f"flow 'sal_order': event 'Entry' field 'FQTY2': no column 'FQTY2' in wide table '{ENTRY}'"]


def test_conditions_on_unknown_columns_or_of_the_wrong_kind_are_named() -> None:
    broken = PublishedEvent("Entry", ENTRY, key=("FENTRYID",), fields=("FQTY",),
                            when=(Where("FDOCUMENTSTATUS", "=", "C"), Where("FSTATUS", "=", "C")),
                            row_when=(AnyOf((Where("FQTY", ">", 0), Where("FQTYY", ">", 0))), AnyOf(()),
                                      Where("FSEQ", "=", "1")))
    assert _with(broken) == [
        f"flow 'sal_order': event 'Entry' when \"FSTATUS = 'C'\": no column 'FSTATUS' in wide table '{DOC}'",
        f"flow 'sal_order': event 'Entry' row when 'FQTYY > 0': no column 'FQTYY' in wide table '{ENTRY}'",
        "flow 'sal_order': event 'Entry' row when AnyOf(): holds no predicate",
        "flow 'sal_order': event 'Entry' row when \"FSEQ = '1'\": '1' is not a value of int column 'FSEQ'"]
    assert _with(PublishedEvent("Doc", DOC, key=("FID",), fields=("FID",), row_when=AUDITED)) == [
        f"flow 'sal_order': event 'Doc' row_when: the event is one per root row ('{DOC}'): row_when is for a "
        "child table's event"]


def test_a_first_of_event_keeps_what_its_tables_need() -> None:
    first = FirstOf(by="FAPPROVEDATE", table="first_x", entities="first_x")
    broken = PublishedEvent("First", DOC, key=("FCUSTID",), fields=("FBILLNO", Field("order_id", "FBILLNO")),
                            when=AUDITED, first=first)
    assert _with(broken) == [
        "flow 'sal_order': event 'First' first by 'FAPPROVEDATE': carry it as a field: the first's record keeps it",
        "flow 'sal_order': event 'First' key 'FCUSTID': a first-of event carries its key columns as fields of the "
        "same name",
        "flow 'sal_order': event 'First' field 'order_id': in a first-of event order_id is the first entity's id",
        "flow 'sal_order': event 'First' first: the first and the candidacies need two tables, not 'first_x' twice"]
    per_entry = PublishedEvent("First", ENTRY, key=("FCUSTID",), fields=("FCUSTID",), first=first)
    assert _with(per_entry) == [
        f"flow 'sal_order': event 'First' first: a first-of event is one per group of root rows: its table is "
        f"'{DOC}'"]
    assert _with(replace(broken, first=replace(first, by="FAUDITDATE"))) [0] == (
        f"flow 'sal_order': event 'First' first by 'FAUDITDATE': no column 'FAUDITDATE' in wide table '{DOC}'")


def test_two_flows_may_not_publish_one_event_type_or_keep_firsts_in_one_table() -> None:
    twice = replace(SAL_ORDER, events=(replace(SAL_ORDER.events[0], name="CancelOrder"),
                                       replace(SAL_ORDER.events[2], first=FirstOf(
                                           "FAPPROVEDATE", "first_consume", "first_jd_customer_order_candidate"))))
    assert problems_across((GQSH, twice)) == [
        "flow 'sal_order': table 'first_consume': already written by flow 'gqsh'",
        "flow 'sal_order': event 'CancelOrder': already published by flow 'gqsh' (an event type and its ids are "
        "one for every flow)"]
