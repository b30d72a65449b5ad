"""The flow declarations, checked when this package is imported: a declaration that does not
hold together (alone, or beside the others) raises ``flows.validation.DeclarationError`` with
every problem.  The engine runs the ones ``flows.registry.RUNNING`` lists."""

from __future__ import annotations

from flows.declaration import FlowDeclaration
from flows.declared.gqsh import GQSH
from flows.declared.pos import POS
from flows.declared.pur_mrb import PUR_MRB
from flows.declared.sal_order import SAL_ORDER
from flows.declared.stk_inventory import STK_INVENTORY
from flows.validation import checked

#: Every declared flow, in the order ``tdc flow list`` shows them.
DECLARATIONS: tuple[FlowDeclaration, ...] = checked((GQSH, POS, SAL_ORDER, PUR_MRB, STK_INVENTORY))
#: Name -> declaration.
BY_NAME: dict[str, FlowDeclaration] = {flow.name: flow for flow in DECLARATIONS}
