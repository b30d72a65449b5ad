"""Which orders a worker renews: every chain key with a token in the messages it holds."""

from types import SimpleNamespace

from tasks.lease_keeper import held_orders


def _request(name: str, args=(), kwargs=None):  # type: ignore[no-untyped-def]
    return SimpleNamespace(task_name=name, args=list(args), kwargs=kwargs or {})


def test_held_orders_reads_first_steps_kwargs_and_later_steps_args_and_skips_the_rest() -> None:
    requests = [
        _request("tdc.check", kwargs={"keys": [{"order_id": "A", "operation_type": "PAY", "token": 5}]}),
        _request("tdc.merge", args=[[{"order_id": "B", "operation_type": "PAY", "token": 7, "version": 2},
                                     {"order_id": "C", "operation_type": "PAY", "token": "old"},
                                     {"order_id": "D", "operation_type": "PAY", "token": True}, "junk"]]),
        _request("tdc.finish", args=["not a list"]),
        _request("tdc.rescan_slice", kwargs={"keys": [{"order_id": "E", "token": 9}]}),
    ]
    assert held_orders(requests) == {"A": 5, "B": 7}
