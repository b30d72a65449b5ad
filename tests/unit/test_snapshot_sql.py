"""The snapshot's SELECT: identifiers quoted as MySQL/MariaDB quote them, the operator's condition
kept whole, order ids bound as parameters."""

import pytest

from cdc.snapshot import quoted, select_rows


@pytest.mark.parametrize(("name", "expected"), [
    ("gqsh_order", "`gqsh_order`"),
    ("gqsh-src", "`gqsh-src`"),
    ("order items", "`order items`"),
    ("a`b", "`a``b`"),
    ("select", "`select`"),
])
def test_identifiers_are_quoted_with_backticks_doubled(name: str, expected: str) -> None:
    assert quoted(name) == expected


def test_a_whole_table() -> None:
    assert select_rows("gqsh", "gqsh_order") == "SELECT * FROM `gqsh`.`gqsh_order`"


def test_names_that_need_quoting_cannot_end_the_identifier() -> None:
    # Given a database and a table whose names hold a backtick, a hyphen and a space
    sql = select_rows("gqsh_src_a`b-c", "order` items")
    # Then each stays one identifier
    assert sql == "SELECT * FROM `gqsh_src_a``b-c`.`order`` items`"


def test_the_operators_condition_is_kept_whole_in_parentheses() -> None:
    sql = select_rows("gqsh", "gqsh_order", where="status = 10 OR remark LIKE '50%'")
    assert sql == "SELECT * FROM `gqsh`.`gqsh_order` WHERE (status = 10 OR remark LIKE '50%')"


def test_with_order_ids_the_key_is_quoted_and_the_percent_signs_doubled_for_the_driver() -> None:
    sql = select_rows("gqsh", "gqsh_order", where="remark LIKE '50%'", order_key="order_id", orders=2)
    assert sql == "SELECT * FROM `gqsh`.`gqsh_order` WHERE (remark LIKE '50%%') AND `order_id` IN (%s, %s)"
