"""Checker and Generator strategies, registered in one explicit table per kind."""

from __future__ import annotations

from typing import Any, Protocol

from flows.gqsh import CANCELLED, COMPLETED, DELIVERED
from flows.state_machine import Operation
from strategies.checkers import PayChecker, RefundChecker, StatusChecker, SubmitChecker
from strategies.facts import OrderFacts
from strategies.generators import (
    CompleteGenerator,
    NoFieldsGenerator,
    PayGenerator,
    RefundGenerator,
    SubmitGenerator,
)


class Checker(Protocol):
    def check(self, facts: OrderFacts) -> str | None: ...


class Generator(Protocol):
    def generate(self, order: dict[str, Any], items: dict[int, dict[str, Any]], facts: OrderFacts) -> None: ...


#: Operation -> completeness check.
CHECKERS: dict[str, Checker] = {
    Operation.SUBMIT: SubmitChecker(),
    Operation.PAY: PayChecker(),
    Operation.DELIVER: StatusChecker(DELIVERED, COMPLETED),
    Operation.COMPLETE: StatusChecker(COMPLETED),
    Operation.REFUND: RefundChecker(),
    Operation.CANCEL: StatusChecker(CANCELLED),
}

#: Operation -> wide-row generator.
GENERATORS: dict[str, Generator] = {
    Operation.SUBMIT: SubmitGenerator(),
    Operation.PAY: PayGenerator(),
    Operation.DELIVER: NoFieldsGenerator(),
    Operation.COMPLETE: CompleteGenerator(),
    Operation.REFUND: RefundGenerator(),
    Operation.CANCEL: NoFieldsGenerator(),
}
