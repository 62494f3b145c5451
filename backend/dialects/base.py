"""The dialect interface: what export and restore may ask of a database.

Export and restore never test the dialect themselves: they ask the object
returned by `for_engine` for a consistent read transaction, the expression that
reads a column without loss, the ordering of keys, and the database's own name
for each column type.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnClause, ColumnElement

#: Receives batches of (key, row bytes), in key order.
Emit = Callable[[list[tuple[bytes, bytes]]], None]


@dataclass(frozen=True)
class RowSource:
    """A table to read: its columns with their codec kinds, and its key."""

    schema: str | None
    table: str
    columns: dict[str, str]  # name -> kind
    primary_key: list[str]


class Dialect:
    """Behaviour shared by every database; subclasses override what differs."""

    name = "generic"
    #: Kind for a column whose type SQLAlchemy does not know.
    unknown_kind = "text"

    @contextmanager
    def read_transaction(self, engine: Engine) -> Iterator[Connection]:
        """A connection whose reads all see one moment of the database."""
        with engine.connect() as conn, conn.begin():
            yield conn

    def select_expr(self, column: ColumnClause[Any], kind: str) -> ColumnElement[Any]:
        """How to read a column so the value reaches the codec without loss."""
        return column

    def order_expr(self, column: ColumnClause[Any], kind: str) -> ColumnElement[Any]:
        """How to order by a key column so the order never depends on a locale."""
        return column

    def fast_rows(self, conn: Connection, source: RowSource, emit: Emit) -> bool:
        """Stream a table's encoded rows by a faster path than SQLAlchemy's, if there is one.

        Returns False, having read nothing, when the dialect has no such path
        for this table; export then falls back to selecting Python values.
        """
        return False

    def declared_types(self, conn: Connection, schema: str | None, table: str) -> dict[str, str]:
        """The database's own type name for each column, for the manifest."""
        return {}

    def default_schema(self, conn: Connection) -> str | None:
        return None
