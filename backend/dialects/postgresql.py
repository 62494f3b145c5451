"""PostgreSQL: a pg_dump-style snapshot transaction and text casts where drivers lose data."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import ARRAY, Engine, Text, cast, text
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnClause, ColumnElement

from backend.dialects.base import Dialect

# Read as text: psycopg2 turns an interval's months into 30 days, JSON numbers
# into floats, and 'infinity' dates into year 9999; PostgreSQL's own text keeps
# all of them exactly.
_TEXT_KINDS = ("interval", "json", "text", "date", "datetime", "datetime_tz")
_COLLATABLE = ("string",)


class PostgresDialect(Dialect):
    name = "postgresql"
    unknown_kind = "text"

    @contextmanager
    def read_transaction(self, engine: Engine) -> Iterator[Connection]:
        # The isolation pg_dump uses: every table read sees the same snapshot,
        # and READ ONLY guarantees the export never writes by mistake.
        with engine.connect() as conn:
            conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            with conn.begin():
                conn.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")
                conn.exec_driver_sql("SET LOCAL IntervalStyle = 'iso_8601'")
                conn.exec_driver_sql("SET LOCAL extra_float_digits = 3")
                yield conn

    def select_expr(self, column: ColumnClause[Any], kind: str) -> ColumnElement[Any]:
        base = kind.removeprefix("array:")
        if base not in _TEXT_KINDS:
            return column
        target = ARRAY(Text) if kind.startswith("array:") else Text()
        return cast(column, target).label(column.name)

    def order_expr(self, column: ColumnClause[Any], kind: str) -> ColumnElement[Any]:
        # "C" orders by code point, as SQLite's BINARY does, whatever the locale.
        return column.collate("C") if kind in _COLLATABLE else column

    def declared_types(self, conn: Connection, schema: str | None, table: str) -> dict[str, str]:
        rows = conn.execute(
            text(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod) "
                "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = :schema AND c.relname = :table "
                "AND a.attnum > 0 AND NOT a.attisdropped"
            ),
            {"schema": schema or self.default_schema(conn), "table": table},
        )
        return {name: type_name for name, type_name in rows}

    def default_schema(self, conn: Connection) -> str | None:
        return str(conn.execute(text("SELECT current_schema()")).scalar_one())
