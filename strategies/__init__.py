"""Checker and Generator strategies, registered in one explicit table per kind."""

from __future__ import annotations

from flows.gqsh import CANCELLED, COMPLETED, DELIVERED
from flows.state_machine import Operation
from strategies.checkers import PayChecker, RefundChecker, StatusChecker, SubmitChecker
from strategies.generators import (
    CompleteGenerator,
    NoFieldsGenerator,
    PayGenerator,
    RefundGenerator,
    SubmitGenerator,
)

#: Operation -> completeness check.
CHECKERS = {
    Operation.SUBMIT: SubmitChecker(),
    Operation.PAY: PayChecker(),
    Operation.DELIVER: StatusChecker(DELIVERED, COMPLETED),
    Operation.COMPLETE: StatusChecker(COMPLETED),
    Operation.REFUND: RefundChecker(),
    Operation.CANCEL: StatusChecker(CANCELLED),
}

#: Operation -> wide-row generator.
GENERATORS = {
    Operation.SUBMIT: SubmitGenerator(),
    Operation.PAY: PayGenerator(),
    Operation.DELIVER: NoFieldsGenerator(),
    Operation.COMPLETE: CompleteGenerator(),
    Operation.REFUND: RefundGenerator(),
    Operation.CANCEL: NoFieldsGenerator(),
}
