"""SQLite, the embedded default: an explicit read transaction and dynamic typing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, Text, type_coerce
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnClause, ColumnElement

from backend.dialects.base import Dialect


class SqliteDialect(Dialect):
    name = "sqlite"
    # A column of unknown declared type holds whatever storage class was written.
    unknown_kind = "any"

    @contextmanager
    def read_transaction(self, engine: Engine) -> Iterator[Connection]:
        # pysqlite opens no transaction for SELECT on its own; without BEGIN each
        # statement would see a different moment. The first read takes the snapshot
        # (WAL) or the shared lock (rollback journal) and holds it to ROLLBACK.
        with engine.connect() as conn:
            conn.exec_driver_sql("BEGIN")
            try:
                yield conn
            finally:
                conn.rollback()

    def select_expr(self, column: ColumnClause[Any], kind: str) -> ColumnElement[Any]:
        if kind == "json":  # the stored text, with its numbers' exact digits
            return type_coerce(column, Text).label(column.name)
        return column

    def declared_types(self, conn: Connection, schema: str | None, table: str) -> dict[str, str]:
        prefix = f"{_quote(schema)}." if schema else ""
        rows = conn.exec_driver_sql(f"PRAGMA {prefix}table_xinfo({_quote(table)})")
        return {row[1]: row[2] for row in rows}


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'
