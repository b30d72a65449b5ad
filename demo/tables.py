"""The online order flow's (``gqsh``) wide tables, by the names the online-order demo, its
benches and its tests know them by.  The engine never names them: it reads each flow's tables
from its declaration (``models.wide.SCHEMAS``)."""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table

from models.wide import SCHEMAS, WideSchema

#: The online order flow's wide tables and snapshots.
ONLINE: WideSchema = SCHEMAS["gqsh"]
ORDER_TABLE: Table = ONLINE.root
ITEM_TABLE: Table = cast(Table, ONLINE.child)
