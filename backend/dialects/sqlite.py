"""SQLite, the embedded default: an explicit read transaction and dynamic typing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, Text, insert, type_coerce
from sqlalchemy.engine import Connection
from sqlalchemy.sql import column as sql_column
from sqlalchemy.sql import table as sql_table
from sqlalchemy.sql.elements import ColumnClause, ColumnElement

from backend import codec
from backend.dialects.base import Dialect, RowTarget
from backend.errors import RestoreConflict

_INSERT_BATCH = 1000


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

    @contextmanager
    def write_transaction(self, engine: Engine) -> Iterator[Connection]:
        # Foreign keys off for the load: with them on, DELETE would cascade into
        # tables that are not being restored. They are checked explicitly before
        # COMMIT instead (end_replace), so tables load in any order, cycles included.
        # BEGIN IMMEDIATE takes the write lock up front.
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA foreign_keys = OFF")
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.rollback()
                    raise
                conn.commit()
            finally:
                conn.exec_driver_sql("PRAGMA foreign_keys = ON")

    def begin_replace(self, conn: Connection, schema: str | None, tables: list[str]) -> list[str]:
        """Drop the tables' triggers (SQLite cannot disable them) and empty the tables.

        The triggers' CREATE statements come back to be run at the end, in the
        same transaction, so a failure puts them back too.
        """
        prefix = f"{_quote(schema)}." if schema else ""
        triggers = conn.exec_driver_sql(
            f"SELECT name, sql FROM {prefix}sqlite_master WHERE type = 'trigger' "  # noqa: S608
            f"AND tbl_name IN ({', '.join('?' for _ in tables)}) ORDER BY name",
            tuple(tables),
        ).all()
        for name, _ in triggers:
            conn.exec_driver_sql(f"DROP TRIGGER {prefix}{_quote(name)}")
        for table in tables:
            conn.exec_driver_sql(f"DELETE FROM {self.quote(conn, schema, table)}")  # noqa: S608
        return [sql for _, sql in triggers]

    def load(self, conn: Connection, target: RowTarget, rows: Iterator[dict[str, Any]]) -> int:
        # JSON documents go in as their exact text; everything else as the Python
        # value SQLAlchemy's type for the live column knows how to store.
        converters: dict[str, Callable[[Any], Any] | None] = {}
        types: dict[str, Any] = {}
        for name in target.columns:
            kind = target.kinds[name]
            if codec.json_columns({name: kind}):
                converters[name], types[name] = codec.db_text(kind), Text()
            else:
                converters[name], types[name] = codec.decoder(kind), target.types[name]
        table = sql_table(
            target.table, *[sql_column(n, types[n]) for n in target.columns], schema=target.schema
        )
        statement = insert(table)
        count = 0
        batch: list[dict[str, Any]] = []
        for row in rows:
            batch.append(
                {
                    name: value if value is None or convert is None else convert(value)
                    for name, convert in converters.items()
                    for value in (row.get(name),)
                }
            )
            if len(batch) >= _INSERT_BATCH:
                conn.execute(statement, batch)
                count += len(batch)
                batch = []
        if batch:
            conn.execute(statement, batch)
            count += len(batch)
        return count

    def end_replace(
        self, conn: Connection, schema: str | None, tables: list[str], pending: list[str]
    ) -> None:
        prefix = f"{_quote(schema)}." if schema else ""
        broken = conn.exec_driver_sql(f"PRAGMA {prefix}foreign_key_check").first()
        if broken is not None:
            table, rowid, parent, _ = broken
            raise RestoreConflict(
                f"the restored data breaks a foreign key: a row of {table} (rowid {rowid}) "
                f"refers to a row missing from {parent}"
            )
        for statement in pending:  # the triggers, as they were
            conn.exec_driver_sql(statement)

    def declared_types(self, conn: Connection, schema: str | None, table: str) -> dict[str, str]:
        prefix = f"{_quote(schema)}." if schema else ""
        rows = conn.exec_driver_sql(f"PRAGMA {prefix}table_xinfo({_quote(table)})")
        return {row[1]: row[2] for row in rows}


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'
