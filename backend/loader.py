"""The fallback loader: a table from the database, or, when it is down, from the snapshot at HEAD.

This is the app's read path, so it is built for a web request: the engine and
each table's reflection are made once, and the snapshot's rows are decoded once
per HEAD commit (HEAD is read from git's ref files, no subprocess). The
snapshot is read from git objects, never the work tree, so an export in
progress can never leak a half-written file into a response.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from git.refs.symbolic import SymbolicReference
from sqlalchemy import Engine, MetaData, Table, select
from sqlalchemy.exc import DBAPIError, NoSuchTableError

from backend.config import Settings, format_timestamp, scrub
from backend.db import make_engine
from backend.errors import DatabaseFailure, JsonsnapError
from backend.repo import SnapshotRepo
from backend.snapshot import resolve_snapshot

log = logging.getLogger("jsonsnap.loader")

_CACHED_TABLES = 32


class DataUnavailable(JsonsnapError):
    """Neither the database nor the snapshot could give the table."""


@dataclass(frozen=True)
class Source:
    """Where rows came from: the database, or a snapshot with its commit and time."""

    commit: str | None = None
    time: dt.datetime | None = None

    @property
    def is_database(self) -> bool:
        return self.commit is None

    def describe(self) -> str:
        """ "db", or "snapshot <id> <time>": the X-Data-Source header's value."""
        if self.commit is None or self.time is None:
            return "db"
        return f"snapshot {self.commit[:10]} {format_timestamp(self.time)}"


@dataclass(frozen=True)
class Loaded:
    """A table's rows, with where they came from, so a caller can show "data as of ..."."""

    rows: list[dict[str, Any]]
    source: Source


class FallbackLoader:
    """Reads tables from one database, falling back to one snapshot repository."""

    def __init__(self, database_url: str | None = None, repo_path: str | None = None) -> None:
        settings = Settings.resolve(db=database_url, repo=repo_path)
        self.database_url = settings.database_url
        self.repo_path = Path(settings.repo_path)
        self._engine: Engine | None = None
        self._tables: dict[str, Table] = {}
        self._snapshots: OrderedDict[tuple[str, str], tuple[list[dict[str, Any]], Source]] = (
            OrderedDict()
        )
        self._repo: SnapshotRepo | None = None
        self._lock = threading.Lock()

    def load_table(self, name: str) -> Loaded:
        """The table from the database, or from the snapshot at HEAD if the database fails."""
        try:
            return Loaded(self._from_database(name), Source())
        except (DBAPIError, NoSuchTableError, DatabaseFailure) as exc:
            db_reason = _reason(exc, self.database_url)
        try:
            rows, source = self._from_snapshot(name)
        except (JsonsnapError, OSError, ValueError) as exc:
            raise DataUnavailable(
                f"table {name!r} is unavailable: database: {db_reason}; "
                f"snapshot at HEAD of {self.repo_path}: {_reason(exc, None)}"
            ) from None
        assert source.time is not None
        age = dt.datetime.now(dt.UTC) - source.time
        log.warning(
            "database unavailable (%s); serving %s from snapshot %s of %s (%s old)",
            db_reason,
            name,
            (source.commit or "")[:10],
            format_timestamp(source.time),
            _age(age),
        )
        return Loaded(copy.deepcopy(rows), source)  # callers must not change the cache

    def _from_database(self, name: str) -> list[dict[str, Any]]:
        engine = self._engine_or_new()
        table = self._tables.get(name)
        with engine.connect() as conn:
            if table is None:
                table = Table(name, MetaData(), autoload_with=conn)
                self._tables[name] = table
            statement = select(table).order_by(*table.primary_key.columns)
            # str(): SQLAlchemy's quoted_name is a str subclass that JSON encoders refuse.
            return [
                {str(key): value for key, value in row.items()}
                for row in conn.execute(statement).mappings()
            ]

    def _engine_or_new(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.database_url)
        return self._engine

    def _from_snapshot(self, name: str) -> tuple[list[dict[str, Any]], Source]:
        with self._lock:
            repo = self._repo or SnapshotRepo.open(self.repo_path)
            self._repo = repo
            head = SymbolicReference.dereference_recursive(repo.repo, "HEAD")
            cached = self._snapshots.get((head, name))
            if cached is not None:
                self._snapshots.move_to_end((head, name))
                return cached
            snapshot = resolve_snapshot(repo, head)
            rows = list(snapshot.rows(snapshot.table(name)))
            found = (rows, Source(snapshot.commit, snapshot.time))
            self._snapshots[(head, name)] = found
            while len(self._snapshots) > _CACHED_TABLES:
                self._snapshots.popitem(last=False)
            return found


def _reason(exc: BaseException, url: str | None) -> str:
    if isinstance(exc, NoSuchTableError):
        return f"no such table {exc.args[0]!r}" if exc.args else "no such table"
    original = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(original).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return scrub(text, url)


def _age(delta: dt.timedelta) -> str:
    hours = int(delta.total_seconds() // 3600)
    return (
        f"{hours // 24}d {hours % 24}h" if hours >= 24 else f"{hours}h {delta.seconds // 60 % 60}m"
    )


_loaders: dict[tuple[str, str, str], FallbackLoader] = {}
_loaders_lock = threading.Lock()


def _loader(database_url: str | None, repo_path: str | None) -> FallbackLoader:
    settings = Settings.resolve(db=database_url, repo=repo_path)
    # Relative defaults (sqlite:///data/app.db, snapshots) mean other files in
    # another working directory: the directory is part of the key.
    key = (settings.database_url, str(settings.repo_path.resolve()), os.getcwd())
    with _loaders_lock:
        if key not in _loaders:
            _loaders[key] = FallbackLoader(settings.database_url, key[1])
        return _loaders[key]


def load_table(
    name: str, *, database_url: str | None = None, repo_path: str | None = None
) -> Loaded:
    """A table from the database, or from the snapshot at HEAD when the database fails.

    With no arguments it reads the same configuration as the CLI
    (DATABASE_URL, JSONSNAP_REPO and their defaults). Raises DataUnavailable,
    naming both causes, when neither source can give the table.
    """
    return _loader(database_url, repo_path).load_table(name)


def load_materials_data(*, database_url: str | None = None, repo_path: str | None = None) -> Loaded:
    """The app's materials, with the database-down fallback of the user's original note."""
    return load_table("materials", database_url=database_url, repo_path=repo_path)
