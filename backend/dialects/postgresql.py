"""PostgreSQL: a pg_dump-style snapshot transaction, and COPY as the fast read path."""

from __future__ import annotations

import ctypes
import functools
import io
import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from typing import Any, Protocol

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from sqlalchemy import ARRAY, Engine, Text, cast, text, type_coerce
from sqlalchemy.dialects.postgresql import INTERVAL
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import ColumnClause, ColumnElement

from backend import codec, speedups
from backend.dialects.base import Dialect, Emit, RowSource, RowTarget
from backend.errors import RestoreConflict
from backend.writer import Batch, batch_of

# Read as text: psycopg2 turns an interval's months into 30 days, JSON numbers
# into floats, and 'infinity' dates into year 9999; PostgreSQL's own text keeps
# all of them exactly.
_TEXT_KINDS = ("interval", "json", "text", "date", "datetime", "datetime_tz", "time")
_COLLATABLE = ("string",)
# Kinds whose COPY text may hold backslash escapes.
_ESCAPED_KINDS = ("string", "text", "json", "bytes")
_COPY_ESCAPE = re.compile(rb"\\(.)")
_COPY_CHARS = {b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"v": b"\v"}
_COPY_NULL = b"\\N"
_PLAIN_STRING = re.compile(rb'["\\\x00-\x1f]')
_COPY_CHUNK = 1 << 18
_COPY_BUFFER = 1 << 18
_MEMO_BYTES = 2 * 1024 * 1024
_MEMO_MAX_BYTES = 512


class PostgresDialect(Dialect):
    name = "postgresql"
    unknown_kind = "text"
    extra_kinds = ((INTERVAL, "interval"),)

    @contextmanager
    def read_transaction(self, engine: Engine) -> Iterator[Connection]:
        # The isolation pg_dump uses: every table read sees the same snapshot,
        # and READ ONLY guarantees the export never writes by mistake. The
        # settings fix every text rendering that a server's defaults could vary.
        with _snapshot_reader(engine) as conn:
            yield conn

    @contextmanager
    def sibling_readers(
        self, engine: Engine, conn: Connection, count: int
    ) -> Iterator[list[Connection]]:
        """Connections that share `conn`'s snapshot, as pg_dump --jobs does.

        An optimisation only: if the server has no connection to spare, there
        are fewer.
        """
        snapshot = ""
        if count > 0:  # PostgreSQL 10 or later, also on a standby
            snapshot = str(conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one())
        with ExitStack() as stack:
            siblings: list[Connection] = []
            while snapshot and len(siblings) < count:
                try:
                    siblings.append(stack.enter_context(_snapshot_reader(engine, snapshot)))
                except DBAPIError:
                    break
            yield siblings

    def table_sizes(
        self, conn: Connection, schema: str | None, tables: list[str]
    ) -> dict[str, int]:
        rows = conn.execute(
            text(
                "SELECT c.relname, c.relpages FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = :schema AND c.relname = ANY(:tables)"
            ),
            {"schema": schema or self.default_schema(conn), "tables": tables},
        )
        return {name: int(pages) for name, pages in rows}

    def select_expr(self, column: ColumnClause[Any], kind: str) -> ColumnElement[Any]:
        base = kind.removeprefix("array:")
        if kind == "text":
            # The driver already hands over the text of a type it does not know;
            # a CAST would differ from COPY's (inet: 10.0.0.1/32, not 10.0.0.1).
            return type_coerce(column, Text()).label(column.name)
        if base not in _TEXT_KINDS:
            return column
        target = ARRAY(Text) if kind.startswith("array:") else Text()
        return cast(column, target).label(column.name)

    def order_expr(self, column: ColumnClause[Any], kind: str) -> ColumnElement[Any]:
        # "C" orders by code point, as SQLite's BINARY does, whatever the locale.
        return column.collate("C") if kind in _COLLATABLE else column

    def fast_rows(self, conn: Connection, source: RowSource, emit: Emit) -> bool:
        """COPY (SELECT ...) TO STDOUT, turned into JSON text without Python values.

        pg_dump reads with COPY too; this path is what keeps an export within
        a small factor of it. Arrays have no text encoder and take the slow path.
        """
        kinds = source.columns.values()
        if not kinds or not all(codec.has_text_encoder(kind) for kind in kinds):
            return False
        if psycopg2.extensions.get_wait_callback() is not None:
            # Under gevent or eventlet psycopg2 refuses COPY ("copy_expert cannot
            # be used with an asynchronous callback"), and its connections do
            # not block, as libpq's blocking calls need.
            return False
        names = sorted(source.columns)
        quote = conn.dialect.identifier_preparer.quote

        def column(name: str) -> str:
            return f"t.{quote(name)}"

        order = [
            column(k) + (' COLLATE "C"' if source.columns[k] in _COLLATABLE else "")
            for k in source.primary_key
        ]
        tables = [f"{self.quote(conn, source.schema, source.table)} AS t"]
        encoder = _line_encoder(column, names, source)
        if isinstance(encoder, _ServerRows) and encoder.lateral:
            tables.append(encoder.lateral)
        # Every identifier is quoted by SQLAlchemy's preparer, every literal by
        # _literal; nothing else is interpolated.
        select = f"SELECT {', '.join(encoder.select)} FROM {', '.join(tables)}"  # noqa: S608
        if order:
            select += f" ORDER BY {', '.join(order)}"
        sql = f"COPY ({select}) TO STDOUT"
        libpq = _libpq() if speedups.native is not None else None
        if libpq is not None:
            _copy_out(conn, sql, libpq, lambda lines: emit(*encoder.chunk(lines)))
            return True
        # Closed on the way out, success or not: a buffer left over by a failed
        # COPY is then dropped, never flushed into the sink when collected.
        with _CopySink(encoder, emit) as sink:
            buffered = io.BufferedWriter(sink, buffer_size=_COPY_BUFFER)
            _copy(conn, sql, buffered)
            buffered.flush()
            sink.finish()
        return True

    @contextmanager
    def write_transaction(self, engine: Engine) -> Iterator[Connection]:
        with engine.connect() as conn:
            _in_utf8(conn)
            with conn.begin():
                for setting in _WRITE_SETTINGS:
                    conn.exec_driver_sql(f"SET LOCAL {setting}")
                yield conn

    def inline_foreign_keys(self) -> bool:
        # Tables are loaded with every foreign key dropped; new ones are added
        # with the others at the end, where all of them are checked at once.
        return False

    def begin_replace(self, conn: Connection, schema: str | None, tables: list[str]) -> list[str]:
        """Drop the foreign keys on and into the tables, disable their triggers, truncate.

        Dropping the foreign keys (and adding them back, checked, at the end)
        is what lets self-references and cycles load in any order, as pg_restore
        does; DDL is transactional here, so a failure undoes it too.
        """
        names = [self.quote(conn, schema, table) for table in tables]
        foreign_keys = conn.execute(
            text(
                "SELECT conname, conrelid::regclass::text, pg_get_constraintdef(oid) "
                "FROM pg_constraint WHERE contype = 'f' "
                "AND (conrelid = ANY(CAST(:tables AS regclass[])) "
                "OR confrelid = ANY(CAST(:tables AS regclass[]))) ORDER BY 2, 1"
            ),
            {"tables": names},
        ).all()
        quote = conn.dialect.identifier_preparer.quote
        pending = []
        for constraint, table, definition in foreign_keys:
            conn.exec_driver_sql(f"ALTER TABLE {table} DROP CONSTRAINT {quote(constraint)}")
            pending.append(f"ALTER TABLE {table} ADD CONSTRAINT {quote(constraint)} {definition}")
        for name in names:
            conn.exec_driver_sql(f"ALTER TABLE {name} DISABLE TRIGGER USER")
            pending.append(f"ALTER TABLE {name} ENABLE TRIGGER USER")
        if names:
            conn.exec_driver_sql(f"TRUNCATE {', '.join(names)}")
        return pending

    def load(self, conn: Connection, target: RowTarget, rows: Iterator[dict[str, Any]]) -> int:
        quote = conn.dialect.identifier_preparer.quote
        columns = ", ".join(quote(c) for c in target.columns)
        sql = f"COPY {self.quote(conn, target.schema, target.table)} ({columns}) FROM STDIN"
        reader = _CopyReader(target, rows)
        _copy(conn, sql, reader, size=_COPY_CHUNK)
        return reader.count

    def end_replace(
        self, conn: Connection, schema: str | None, tables: list[str], pending: list[str]
    ) -> None:
        driver_error = conn.dialect.loaded_dbapi.Error
        for statement in pending:
            try:
                with conn.begin_nested():
                    conn.exec_driver_sql(statement)
            except Exception as exc:
                orig = getattr(exc, "orig", exc)
                if not isinstance(orig, driver_error):
                    raise
                raise RestoreConflict(_conflict(statement, orig)) from None
        for table in tables:
            self._reset_sequences(conn, self.quote(conn, schema, table))

    def _reset_sequences(self, conn: Connection, table: str) -> None:
        """Point serial and identity sequences past the restored rows."""
        sequences = conn.execute(
            text(
                "SELECT a.attname, pg_get_serial_sequence(:table, a.attname) FROM pg_attribute a "
                "WHERE a.attrelid = CAST(:table AS regclass) AND a.attnum > 0 "
                "AND NOT a.attisdropped AND pg_get_serial_sequence(:table, a.attname) IS NOT NULL"
            ),
            {"table": table},
        ).all()
        quote = conn.dialect.identifier_preparer.quote
        for column, sequence in sequences:
            top = conn.exec_driver_sql(f"SELECT max({quote(column)}) FROM {table}").scalar()  # noqa: S608
            if top is None:
                conn.execute(
                    text(
                        "SELECT setval(:seq, s.seqstart, false) FROM pg_sequence s "
                        "WHERE s.seqrelid = CAST(:seq AS regclass)"
                    ),
                    {"seq": sequence},
                )
            else:
                conn.execute(text("SELECT setval(:seq, :top, true)"), {"seq": sequence, "top": top})

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


# Every text rendering a server's defaults could vary, fixed for the export.
_READ_SETTINGS = (
    "TIME ZONE 'UTC'",
    "DateStyle = 'ISO, YMD'",
    "IntervalStyle = 'iso_8601'",
    "extra_float_digits = 3",
    "bytea_output = 'hex'",
)


# What restore's COPY FROM text is read as: the snapshot's zone and date order.
_WRITE_SETTINGS = ("TIME ZONE 'UTC'", "DateStyle = 'ISO, YMD'")


@contextmanager
def _snapshot_reader(engine: Engine, snapshot: str | None = None) -> Iterator[Connection]:
    """A REPEATABLE READ, READ ONLY transaction; with `snapshot`, seeing exactly that one."""
    with engine.connect() as conn:
        _in_utf8(conn)
        conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with conn.begin():
            if snapshot:  # must come first in the transaction
                conn.execute(text("SET TRANSACTION SNAPSHOT :id"), {"id": snapshot})
            for setting in _READ_SETTINGS:
                conn.exec_driver_sql(f"SET LOCAL {setting}")
            yield conn


def _in_utf8(conn: Connection) -> None:
    """COPY text in UTF-8, whatever the database's encoding: snapshots are UTF-8 JSON.

    PostgreSQL then converts every text it sends and checks it, even from a
    SQL_ASCII database, so the encoders only ever see UTF-8. Set through
    psycopg2, which decodes everything else by it, and before the transaction
    begins, since changing it aborts one.
    """
    dbapi_connection: Any = conn.connection.dbapi_connection
    if dbapi_connection.encoding != "UTF8":
        dbapi_connection.set_client_encoding("UTF8")


def _copy(conn: Connection, sql: str, stream: Any, size: int = 8192) -> None:
    """COPY on the raw psycopg2 cursor, beside SQLAlchemy: so mind its connection.

    If the server went away mid-COPY, SQLAlchemy never saw the error; the
    connection is invalidated here, or the rollback on the way out would fail
    on the dead socket and hide the real cause ("connection already closed").
    """
    dbapi_connection = conn.connection.dbapi_connection
    assert dbapi_connection is not None
    cursor = dbapi_connection.cursor()
    try:
        cursor.copy_expert(sql, stream, size=size)
    except conn.dialect.loaded_dbapi.Error as exc:
        if conn.dialect.is_disconnect(exc, dbapi_connection, cursor):
            conn.invalidate(exc)
        raise
    except BaseException:
        # Raised by the stream itself (a stop request, an interrupt): the
        # connection is still in the middle of the COPY and cannot be reused.
        conn.invalidate()
        raise
    finally:
        if not cursor.closed:
            cursor.close()


#: libpq's functions that `_speedups.copy_out` calls, in the order it takes them.
_LIBPQ_FUNCTIONS = (
    "PQexecParams",
    "PQresultStatus",
    "PQresultErrorMessage",
    "PQresultErrorField",
    "PQclear",
    "PQgetCopyData",
    "PQfreemem",
    "PQgetResult",
    "PQerrorMessage",
    "PQtransactionStatus",
)


@functools.cache
def _libpq() -> tuple[int, ...] | None:
    """The addresses of libpq's functions in the library psycopg2 uses, or None.

    Looked up through psycopg2's own module: a symbol looked up there is
    searched in the libraries that module was linked with, so this is the
    libpq that owns psycopg2's connections, whatever other libpq is installed
    (psycopg2-binary carries its own). Where that cannot be done (a platform
    whose loader does not search that way), COPY goes through psycopg2.
    """
    try:
        library = ctypes.CDLL(psycopg2._psycopg.__file__)  # type: ignore[attr-defined]
        found = [
            ctypes.cast(getattr(library, name), ctypes.c_void_p).value for name in _LIBPQ_FUNCTIONS
        ]
    except (OSError, AttributeError):
        return None
    return tuple(found) if all(found) else None  # type: ignore[arg-type]


def _copy_out(
    conn: Connection, sql: str, libpq: tuple[int, ...], sink: Callable[[bytes], None]
) -> None:
    """COPY TO STDOUT on psycopg2's connection, read in runs of rows by compiled code.

    psycopg2's copy_expert hands Python each row on its own, and takes the GIL
    for each: two tables read side by side then wait on each other millions of
    times. Here libpq's rows are gathered without the GIL, as psql reads them,
    and `sink` gets them _COPY_BUFFER bytes at a time. psycopg2 never hears of
    the COPY, so on any failure the connection, now in an unknown state, is
    dropped.
    """
    native = speedups.native
    assert native is not None
    pgconn = conn.connection.dbapi_connection.pgconn_ptr  # type: ignore[union-attr]
    try:
        native.copy_out(pgconn, libpq, sql.encode(), _COPY_BUFFER, sink)
    except native.CopyFailed as exc:
        conn.invalidate()
        raise _driver_error(*exc.args) from None
    except BaseException:
        conn.invalidate()
        raise


def _driver_error(raw: bytes, sqlstate: str | None) -> psycopg2.Error:
    """The exception psycopg2 would have raised for this libpq error."""
    kind: type[psycopg2.Error] = psycopg2.OperationalError
    if sqlstate:
        with suppress(KeyError):
            kind = psycopg2.errors.lookup(sqlstate)
    # The server writes in the client encoding (UTF-8 here), libpq in its locale's.
    message = raw.decode("utf-8", "replace")
    # psycopg2 drops libpq's severity prefix, as here.
    for severity in ("ERROR:  ", "FATAL:  ", "PANIC:  "):
        message = message.removeprefix(severity)
    return kind(message.strip() or "COPY failed")


def _copy_unescape(raw: bytes) -> bytes:
    return _COPY_ESCAPE.sub(lambda m: _COPY_CHARS.get(m.group(1), m.group(1)), raw)


def _copy_encoder(kind: str) -> codec.TextEncoder | None:
    encode = codec.text_encoder(kind)
    if kind in ("string", "text"):
        return _copy_string
    if kind not in _ESCAPED_KINDS or encode is None:
        return encode
    inner = encode

    def unescape_then_encode(raw: bytes) -> bytes:
        return inner(_copy_unescape(raw) if b"\\" in raw else raw)

    return unescape_then_encode


def _copy_string(raw: bytes) -> bytes:
    # The hot case in one call: nothing to unescape and nothing JSON must escape.
    if _PLAIN_STRING.search(raw) is None:
        return b'"' + raw + b'"'
    return codec.text_encoder("string")(_copy_unescape(raw))  # type: ignore[misc]


class _LineEncoder(Protocol):
    """Turns COPY lines into a batch of rows; `select` is the column list it reads."""

    select: list[str]

    def chunk(self, data: bytes) -> Batch: ...


def _line_encoder(
    column: Callable[[str], str], names: list[str], source: RowSource
) -> _LineEncoder:
    """The fastest way at hand to turn a table's COPY lines into rows.

    With the compiled extension, the server sends its plain COPY text, as for
    pg_dump, and C encodes it (`_NativeRows`). Without it, the server prints
    whole rows where it can (`_ServerRows`), which costs it about twice the
    CPU but spares Python a call per value; otherwise Python encodes each line.
    """
    native = speedups.native
    if native is not None:
        return _NativeRows(native.encode_rows, column, names, source)
    return _ServerRows.plan(column, names, source) or _RowEncoder(column, names, source)


# How the compiled encoder treats each kind's COPY text (see backend/_speedups.c);
# the other kinds go through their Python encoder, behind a memo per column.
_NATIVE_KINDS = {
    "integer": 0,
    **dict.fromkeys(codec.TEXT_QUOTED, 1),
    "string": 2,
    "text": 2,
    "boolean": 3,
    "datetime": 4,
    "datetime_tz": 5,
}
_NATIVE_PYTHON = 6


class _NativeRows:
    """COPY lines -> keys and rows in compiled code, with the same bytes as _RowEncoder.

    Where the C code meets a value it does not handle itself (an escape in a
    timestamp's text, say), it calls the kind's Python encoder for that value,
    so the two paths cannot disagree on rare input.
    """

    def __init__(
        self,
        encode_rows: Callable[..., Batch],
        quote: Callable[[str], str],
        names: list[str],
        source: RowSource,
    ) -> None:
        kinds = [source.columns[name] for name in names]
        encoders = _column_encoders(kinds)
        self.encode_rows = encode_rows
        self.select = [quote(name) for name in names]
        self.plan = (
            tuple(codec.field_parts(names)),
            bytes(_NATIVE_KINDS.get(kind, _NATIVE_PYTHON) for kind in kinds),
            tuple(encoders),
            tuple(enc.memo if isinstance(enc, _ColumnEncoder) else None for enc in encoders),
            tuple(names.index(key) for key in source.primary_key),
        )

    def chunk(self, data: bytes) -> Batch:
        return self.encode_rows(data, *self.plan)


class _RowEncoder:
    """One COPY line -> (key, row bytes), calling Python only where it must.

    A line without NULLs (the common case) goes through a template that quotes
    TEXT_QUOTED values itself and leaves integers as they are; only strings,
    timestamps, JSON and the like need a call. A line with a NULL takes the
    general route, where every value is encoded on its own.
    """

    def __init__(self, quote: Callable[[str], str], names: list[str], source: RowSource) -> None:
        kinds = [source.columns[name] for name in names]
        quoted = [kind in codec.TEXT_QUOTED for kind in kinds]
        self.select = [quote(name) for name in names]
        self.encoders = _column_encoders(kinds)
        self.calls = [
            (i, enc) for i, enc in enumerate(self.encoders) if enc is not None and not quoted[i]
        ]
        self.template = codec.field_lines(names)
        self.fast_template = codec.field_lines(names, quoted)
        self.key_index = [names.index(k) for k in source.primary_key]
        self.fast_key = (
            b"[" + b",".join(b'"%b"' if quoted[i] else b"%b" for i in self.key_index) + b"]"
        )

    def chunk(self, data: bytes) -> Batch:
        return batch_of([self(line) for line in data.split(b"\n")])

    def __call__(self, line: bytes) -> tuple[bytes, bytes]:
        fields = line.split(b"\t")
        if _COPY_NULL in line:  # may also be an escaped backslash before N: still correct
            values = [
                b"null" if raw == _COPY_NULL else raw if enc is None else enc(raw)
                for raw, enc in zip(fields, self.encoders, strict=True)
            ]
            row = self.template % tuple(values)
            key = b"[" + b",".join([values[i] for i in self.key_index]) + b"]"
        else:
            for i, enc in self.calls:
                fields[i] = enc(fields[i])
            row = self.fast_template % tuple(fields)
            key = self.fast_key % tuple([fields[i] for i in self.key_index])
        return (key, row) if self.key_index else (row, row)


# The codec's JSON for a value, as SQL the server evaluates: exactly the bytes
# the text encoders above would make of its COPY text (tests compare the two).
# Each is a format string over the qualified, quoted column.
_SERVER_JSON = {
    "integer": "{c}::text",
    "boolean": "CASE WHEN {c} THEN 'true' WHEN NOT {c} THEN 'false' END",
    # to_json prints a value with its type's output function (char(n) keeps
    # its padding, unlike ::text) and escapes it as orjson does.
    "string": "to_json({c})::text",
    **{kind: "'\"' || {c}::text || '\"'" for kind in codec.TEXT_QUOTED},
    # to_json writes ISO 8601 (2026-01-05T08:30:00+00:00, 'infinity' as it is),
    # but years before 1 as "... BC" after the offset: those take the plain text.
    "datetime": "CASE WHEN {c} >= TIMESTAMP '0001-01-01' THEN to_json({c})::text "
    "ELSE '\"' || {c}::text || '\"' END",
    "datetime_tz": "CASE WHEN {c} >= TIMESTAMPTZ '0001-01-01 00:00Z' THEN to_json({c})::text "
    "ELSE '\"' || {c}::text || '\"' END",
}
# Kinds whose COPY text is still encoded here, and which never hold the raw
# control characters that stand for newlines and field breaks below.
_CLIENT_KINDS = frozenset({"float", "time", "bytes", "json"})
# In the rows the server prints, \x01 stands for a newline, which COPY would escape.
_NEWLINE = "\x01"


class _ServerRows:
    """The server prints whole rows; Python only unescapes, splits and encodes the rest.

    Each COPY line is: the row's key as the codec writes it, then the row's text
    in segments around the values of _CLIENT_KINDS columns, which come raw and
    are encoded here. With no such column a line is just key and row, and a
    whole chunk is handled by a few bytes operations, with no Python per value.
    JSON text never holds a raw control character, so \x01 can stand for the
    row's newlines, and the only COPY escape in server-printed text is a
    doubled backslash.
    """

    def __init__(
        self,
        select: list[str],
        encoders: list[_ColumnEncoder],
        keyed: bool,
        lateral: str | None,
    ) -> None:
        self.select = select
        self.encoders = encoders
        self.keyed = keyed
        self.lateral = lateral
        self.width = len(select)

    @classmethod
    def plan(
        cls, column: Callable[[str], str], names: list[str], source: RowSource
    ) -> _ServerRows | None:
        """The query for a table, or None if the server cannot print its keys or some column."""
        kinds = source.columns
        if any(kinds[name] not in _SERVER_JSON.keys() | _CLIENT_KINDS for name in names):
            return None
        if any(kinds[name] not in _SERVER_JSON for name in source.primary_key):
            return None
        # Each value's JSON is computed once, in a LATERAL subquery, and used
        # by the key and the row alike.
        printed = [name for name in names if kinds[name] in _SERVER_JSON]
        alias = {name: f"j.v{i}" for i, name in enumerate(printed)}
        values = [
            f"{_server_value(column(name), kinds[name], name in source.not_null)} AS v{i}"
            for i, name in enumerate(printed)
        ]
        select, encoders = [], []
        if source.primary_key:
            key = " || ',' || ".join(alias[k] for k in source.primary_key)
            select.append(f"'[' || {key} || ']'")
        parts = [_literal(p.decode("utf-8")) for p in codec.field_parts(names)]
        segment: list[str] = [parts[0]]
        for name, part in zip(names, parts[1:], strict=True):
            if kinds[name] in _CLIENT_KINDS:
                select.extend([" || ".join(segment), column(name)])
                encoders.append(_ColumnEncoder(_client_encoder(kinds[name])))
                segment = []
            else:
                segment.append(alias[name])
            segment.append(part)
        select.append(" || ".join(segment))
        lateral = f"LATERAL (SELECT {', '.join(values)}) AS j" if values else None
        return cls(select, encoders, bool(source.primary_key), lateral)

    def chunk(self, data: bytes) -> Batch:
        escaped = b"\\" in data
        if escaped and not self.encoders:
            data, escaped = data.replace(b"\\\\", b"\\"), False
        fields = data.replace(b"\n", b"\t").replace(_NEWLINE.encode(), b"\n").split(b"\t")
        width, start = self.width, int(self.keyed)
        keys = fields[0::width] if self.keyed else []
        columns = []
        for i in range(start, width):
            column = fields[i::width]
            if (i - start) % 2:
                column = self.encoders[(i - start) // 2].column(column)
            elif escaped:
                column = [_unescape_server(text) for text in column]
            columns.append(column)
        if escaped and self.keyed:
            keys = [_unescape_server(key) for key in keys]
        rows = columns[0] if len(columns) == 1 else list(map(b"".join, zip(*columns, strict=True)))
        return (keys if self.keyed else rows), rows


def _column_encoders(kinds: list[str]) -> list[codec.TextEncoder | None]:
    """Each column's encoder of COPY text: remembered for the kinds encoded in
    Python (_CLIENT_KINDS), None where the text is already JSON."""
    return [
        _ColumnEncoder(_client_encoder(kind)) if kind in _CLIENT_KINDS else _copy_encoder(kind)
        for kind in kinds
    ]


def _client_encoder(kind: str) -> codec.TextEncoder:
    encode = _copy_encoder(kind)
    assert encode is not None, kind  # every kind of _CLIENT_KINDS has one
    return encode


class _ColumnEncoder:
    """Encodes one column's COPY texts, remembering recent small ones.

    Attribute bags, settings, times and prices repeat from row to row; in a
    batch, a hit is a dict lookup in C, with no Python call per value. The memo
    is keyed by the COPY text itself, escapes included, so it can never confuse
    two values, and it lives as long as one table's read.
    """

    def __init__(self, encode: codec.TextEncoder) -> None:
        self.encode = encode
        self.memo = {_COPY_NULL: b"null"}
        self.memo_bytes = 0

    def __call__(self, raw: bytes) -> bytes:
        value = self.memo.get(raw)
        return self._miss(raw) if value is None else value

    def column(self, raws: list[bytes]) -> list[bytes]:
        encoded: list[bytes | None] = list(map(self.memo.get, raws))
        if None in encoded:
            for i, value in enumerate(encoded):
                if value is None:
                    encoded[i] = self._miss(raws[i])
        return encoded  # type: ignore[return-value]  # no None is left

    def _miss(self, raw: bytes) -> bytes:
        value = self.encode(raw)
        if len(raw) <= _MEMO_MAX_BYTES:
            if self.memo_bytes > _MEMO_BYTES:  # a bound on memory, whatever the values
                # Emptied in place: the compiled encoder holds this very dict.
                self.memo.clear()
                self.memo[_COPY_NULL], self.memo_bytes = b"null", 0
            self.memo[raw] = value
            self.memo_bytes += len(raw) + len(value)
        return value


def _unescape_server(text: bytes) -> bytes:
    return text.replace(b"\\\\", b"\\") if b"\\" in text else text


def _literal(text: str) -> str:
    """A SQL string literal for `text`, its newlines written as _NEWLINE.

    An E'' literal reads backslash escapes whatever standard_conforming_strings says.
    """
    escaped = text.replace("\\", "\\\\").replace("'", "''")
    escaped = escaped.replace("\n", f"\\x{ord(_NEWLINE):02x}")
    return f"E'{escaped}'"


def _server_value(column: str, kind: str, not_null: bool) -> str:
    """SQL for a value's JSON text; a nullable one is written null when NULL."""
    value = _SERVER_JSON[kind].format(c=column)
    return value if not_null else f"coalesce({value}, 'null')"


class _CopySink(io.RawIOBase):
    """Where COPY's output lands, through a buffer: complete lines become encoded batches.

    psycopg2 calls `write` once per row. Handed an io.BufferedWriter over this
    sink, those calls are C: the buffer collects the rows, and Python runs
    only once per _COPY_BUFFER bytes, on a whole run of lines.
    """

    def __init__(self, encoder: _LineEncoder, emit: Emit) -> None:
        super().__init__()
        self.encoder = encoder
        self.emit = emit
        self.tail = b""

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = self.tail + data  # a copy: the buffer behind `data` is reused
        end = chunk.rfind(b"\n")
        self.tail = chunk[end + 1 :]
        if end >= 0:
            self.emit(*self.encoder.chunk(chunk[:end]))
        return len(data)

    def finish(self) -> None:
        if self.tail:
            self.emit(*self.encoder.chunk(self.tail))
            self.tail = b""


def _conflict(statement: str, error: Any) -> str:
    diag = getattr(error, "diag", None)
    detail = getattr(diag, "message_detail", None) or ""
    primary = getattr(diag, "message_primary", None) or str(error).strip().splitlines()[0]
    what = statement.split(" ADD CONSTRAINT ", 1)[0].removeprefix("ALTER TABLE ")
    return f"the restored data breaks a constraint on {what}: {primary}" + (
        f" ({detail})" if detail else ""
    )


def _copy_text(kind: str) -> Callable[[Any], str]:
    """A value's COPY text: its text input, escaped where it may hold \\, tab or newline."""
    to_text = codec.db_text(kind)
    if kind not in _ESCAPED_KINDS and not kind.startswith("array:"):
        return to_text  # numbers, dates, times, uuids: nothing COPY would misread

    def escaped(value: Any) -> str:
        text = to_text(value)
        # str.translate looks up every character; four scans in C are much faster.
        if "\\" in text or "\n" in text or "\t" in text or "\r" in text:
            text = text.replace("\\", "\\\\").replace("\n", "\\n")
            text = text.replace("\r", "\\r").replace("\t", "\\t")
        return text

    return escaped


class _CopyReader:
    """The file object COPY FROM reads: the snapshot's rows, as COPY text, on demand."""

    def __init__(self, target: RowTarget, rows: Iterator[dict[str, Any]]) -> None:
        self.columns = [(name, _copy_text(target.kinds[name])) for name in target.columns]
        self.rows = rows
        self.buffer = b""
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        lines = []
        length = len(self.buffer)
        for row in self.rows:
            line = "\t".join(
                [
                    "\\N" if (value := row.get(name)) is None else to_text(value)
                    for name, to_text in self.columns
                ]
            )
            encoded = line.encode("utf-8") + b"\n"
            lines.append(encoded)
            length += len(encoded)
            self.count += 1
            if length >= size > 0:
                break
        data = self.buffer + b"".join(lines)
        cut = size if size > 0 else len(data)
        self.buffer = data[cut:]
        return data[:cut]
