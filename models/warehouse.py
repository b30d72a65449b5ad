"""Warehouse (DWS) tables: the de-duplicated daily ADS aggregates of DESIGN section 4, the
ledger of what each order last contributed to them, and the offline copies of the flows'
dimension tables that the T+1 reload reads."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Date, Integer, String, Table, Text
from sqlalchemy.orm import DeclarativeBase

from flows import SourceTable
from flows.ads import DECLARED, Declared
from flows.declared import DECLARATIONS
from flows.registry import ACCEPTED
from models.types import Timestamp, column_sql_type, sql_type_of


class WarehouseBase(DeclarativeBase):
    """Declarative base of the warehouse tables."""


def _ads_table(declared: Declared) -> Table:
    """An ADS table as its flow declares it: the keys are the primary key, each measure NOT NULL."""
    keys = [Column(name, sql_type_of(kind), primary_key=True, autoincrement=False)
            for name, kind in declared.key_types.items()]
    measures = [Column(name, Integer() if kind is None or kind.kind == "int" else sql_type_of(kind), nullable=False,
                       default=0) for name, kind in declared.measure_types.items()]
    return Table(declared.name, WarehouseBase.metadata, *keys, *measures)


#: ADS table name -> its table, for every declared aggregate.
ADS_TABLES: dict[str, Table] = {name: _ads_table(declared) for name, declared in DECLARED.items()}


def ledger_table(name: str) -> Table:
    """A flow's ledger: what each entity last added to the flow's aggregates, and from which
    version of its wide row.  Updated in the same transaction as the aggregates, so (new - old)
    is applied exactly once."""
    return Table(name, WarehouseBase.metadata,
                 Column("order_id", String(64), primary_key=True),
                 # The root wide row's version the contribution was computed from; 0 before the first.
                 Column("wide_version", Integer, default=0),
                 # The day the contribution is on (NULL: the entity contributes nothing).
                 Column("biz_date", Date, index=True),
                 Column("contribution", Text),
                 # The largest fencing token of a chain that wrote this entity's contribution.
                 Column("fence", BigInteger),
                 Column("updated_at", Timestamp))


#: Flow name -> its ledger (``Retraction.ledger``), for every declared flow with aggregates.
LEDGERS: dict[str, Table] = {flow.name: ledger_table(flow.aggregates[0].retraction.ledger)
                             for flow in DECLARATIONS if flow.aggregates}


def _offline_dimension_table(source: SourceTable) -> Table:
    columns = [Column(name, column_sql_type(kind), primary_key=name == source.key, nullable=name != source.key)
               for name, kind in source.types.items()]
    # When the row last changed at the source: the reload never overwrites a newer CDC value.
    columns.append(Column("updated_at", Timestamp, nullable=False))
    return Table(source.name, WarehouseBase.metadata, *columns)


#: Dimension name -> (its source table declaration, the warehouse table the T+1 reload reads).
OFFLINE_DIMENSIONS: dict[str, tuple[SourceTable, Table]] = {
    source.dimension: (source, _offline_dimension_table(source))
    for source in ACCEPTED.tables.values() if source.dimension is not None
}
