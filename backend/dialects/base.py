"""The dialect interface: what export and restore may ask of a database.

Export and restore never test the dialect themselves. Export asks the object
returned by `for_engine` for a consistent read transaction, the expression that
reads a column without loss, the ordering of keys, a fast read path, and the
database's own name for each column type. Restore asks it for a write
transaction, for constraints out of the way while tables are replaced, for a
fast load path, and for the sequences to be reset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnClause, ColumnElement

from backend import codec

#: Receives batches of rows in key order: their keys, and their bytes in the file.
Emit = Callable[[list[bytes], list[bytes]], None]


@dataclass(frozen=True)
class RowSource:
    """A table to read: its columns with their codec kinds, and its key."""

    schema: str | None
    table: str
    columns: dict[str, str]  # name -> kind
    primary_key: list[str]
    not_null: frozenset[str] = frozenset()


@dataclass(frozen=True)
class RowTarget:
    """A table to load: the columns to write, with their kinds and the live column types."""

    schema: str | None
    table: str
    columns: list[str]
    kinds: dict[str, str]
    types: dict[str, Any]  # name -> SQLAlchemy type of the live column


class Dialect:
    """Behaviour shared by every database; subclasses override what differs."""

    name = "generic"
    #: Kind for a column whose type SQLAlchemy does not know.
    unknown_kind = "text"
    #: The dialect's own column types that SQLAlchemy's generic classes miss.
    extra_kinds: tuple[tuple[type[Any], str], ...] = ()

    def kind_of(self, sa_type: Any) -> str:
        """The codec kind of a reflected column type on this database."""
        return codec.kind_of(sa_type, self.unknown_kind, self.extra_kinds)

    @contextmanager
    def read_transaction(self, engine: Engine) -> Iterator[Connection]:
        """A connection whose reads all see one moment of the database."""
        with engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def sibling_readers(
        self, engine: Engine, conn: Connection, count: int
    ) -> Iterator[list[Connection]]:
        """Up to `count` more connections that see exactly what `conn` sees,
        so tables can be read side by side; none where the database cannot."""
        yield []

    def table_sizes(
        self, conn: Connection, schema: str | None, tables: list[str]
    ) -> dict[str, int]:
        """A rough size of each table, to read the largest first; empty if unknown."""
        return {}

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

    def quote(self, conn: Connection, schema: str | None, table: str) -> str:
        """A table's name, quoted and qualified, for SQL built here."""
        quote = conn.dialect.identifier_preparer.quote
        return f"{quote(schema)}.{quote(table)}" if schema else quote(table)

    # --- the write path (restore) ---------------------------------------------

    @contextmanager
    def write_transaction(self, engine: Engine) -> Iterator[Connection]:
        """One transaction for the whole restore: committed only if every step worked."""
        with engine.connect() as conn, conn.begin():
            yield conn

    def create_table(self, conn: Connection, ddl: str) -> None:
        conn.exec_driver_sql(ddl)

    def inline_foreign_keys(self) -> bool:
        """Whether a created table declares its foreign keys in CREATE TABLE."""
        return True

    def begin_replace(self, conn: Connection, schema: str | None, tables: list[str]) -> list[str]:
        """Empty the tables, with constraints out of the way; returns SQL to run at the end."""
        raise NotImplementedError

    def load(self, conn: Connection, target: RowTarget, rows: Iterator[dict[str, Any]]) -> int:
        """Insert the snapshot's rows (JSON values) into one table; returns the count."""
        raise NotImplementedError

    def end_replace(
        self, conn: Connection, schema: str | None, tables: list[str], pending: list[str]
    ) -> None:
        """Put constraints back (checking them) and reset sequences."""
        raise NotImplementedError
