"""The app's side of the database: engines, session helpers, and error translation.

`db_session()` and `db_readonly_session()` are the names the application already
uses; they live here beside `make_engine`, which every jsonsnap entry point uses
so that a bad URL or an unreachable server always reads the same way.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from backend.config import Settings, mask_url, parse_url, scrub
from backend.errors import BadInput, DatabaseFailure

if TYPE_CHECKING:  # the ORM is the app's: jsonsnap's own commands never load it
    from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, *, create: bool = False) -> Engine:
    """An engine for `url`; a bad URL or a missing driver is a one-line BadInput.

    A SQLite file is created only with `create` (the demo, a restore that creates
    tables): anywhere else a missing file is a typo or a lost disk, and an export
    of a new empty database would be a misleading snapshot.
    """
    parsed = parse_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        # SQLAlchemy 2.1 defaults to psycopg 3; jsonsnap ships psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg2")
    connect_args: dict[str, Any] = {}
    if parsed.drivername == "postgresql+psycopg2" and "connect_timeout" not in parsed.query:
        connect_args["connect_timeout"] = 10  # a dead server must fail, not hang a request
    options: dict[str, Any] = {"pool_pre_ping": True, "connect_args": connect_args}
    if parsed.drivername.startswith("sqlite"):
        # A pooled connection keeps a deleted or replaced file open and passes
        # pre-ping; opening the file each time is cheap and always current.
        options["poolclass"] = NullPool
    try:
        engine = create_engine(parsed, **options)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise BadInput(f"cannot use database URL {mask_url(parsed)}: {exc}") from None
    if engine.dialect.name == "sqlite":
        _prepare_sqlite(engine, create)
    return engine


def _prepare_sqlite(engine: Engine, create: bool) -> None:
    database = engine.url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        path = Path(database)
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        else:

            @event.listens_for(engine, "do_connect")
            def _existing_file_only(_dialect: Any, _record: Any, _args: Any, _kw: Any) -> None:
                if not path.is_file():
                    raise sqlite3.OperationalError(f"no database file at {path}")

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA busy_timeout = 30000")
        cursor.close()


@contextmanager
def translate_db_errors(engine: Engine) -> Iterator[None]:
    """Turn driver exceptions into a one-line DatabaseFailure with no password in it."""
    driver_error = engine.dialect.loaded_dbapi.Error  # raised as is by raw-cursor paths (COPY)
    try:
        yield
    except DBAPIError as exc:
        raise _db_message(exc.orig or exc, engine) from None
    except driver_error as exc:
        raise _db_message(exc, engine) from None
    except SQLAlchemyError as exc:
        reason = scrub(_first_line(str(exc)), engine.url)
        raise DatabaseFailure(reason, reason=reason) from None


def _db_message(exc: BaseException, engine: Engine) -> DatabaseFailure:
    reason = scrub(_first_line(str(exc)), engine.url)
    return DatabaseFailure(f"database error ({mask_url(engine.url)}): {reason}", reason=reason)


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else "unknown error"


_sessions: dict[str, sessionmaker[Session]] = {}


def _sessionmaker(url: str | None) -> sessionmaker[Session]:
    from sqlalchemy.orm import sessionmaker  # noqa: PLC0415 - a fifth of jsonsnap's start-up

    resolved = url or Settings.resolve().database_url
    if resolved not in _sessions:
        _sessions[resolved] = sessionmaker(make_engine(resolved), expire_on_commit=False)
    return _sessions[resolved]


@contextmanager
def db_session(url: str | None = None) -> Iterator[Session]:
    """A read-write session: committed on success, rolled back on any exception."""
    with _sessionmaker(url)() as session, session.begin():
        yield session


@contextmanager
def db_readonly_session(url: str | None = None) -> Iterator[Session]:
    """A session whose work is always rolled back, so a reader can never write."""
    with _sessionmaker(url)() as session:
        try:
            yield session
        finally:
            session.rollback()
