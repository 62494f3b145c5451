"""Past snapshots: naming one by date, moment or revision; listing, reading, comparing them.

Everything here reads git objects, never the work tree, so an export in
progress, or a hand-edited file, cannot leak into what a reader sees; every
data file is checked against the manifest's checksum before it is used.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine

from backend import codec
from backend.config import format_timestamp, local_zone, parse_timestamp
from backend.diff import Side, TableChange, TableDiff, diff_sides
from backend.errors import BadInput, SnapshotCorrupt
from backend.export import Selection, read_database
from backend.layout import DataFile, Manifest, TableEntry, split_rows
from backend.repo import SnapshotRepo
from backend.writer import staged_reader

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_MOMENT = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d")
_TRAILER = "jsonsnap-summary: "

RepoLike = str | os.PathLike[str] | SnapshotRepo


@dataclass(frozen=True)
class SnapshotInfo:
    """One commit of the snapshot history."""

    commit: str
    time: dt.datetime
    subject: str
    summary: dict[str, TableChange] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "commit": self.commit,
            "time": format_timestamp(self.time),
            "subject": self.subject,
            "summary": {name: change.as_dict() for name, change in self.summary.items()},
        }


@dataclass(frozen=True)
class Snapshot:
    """A resolved snapshot: its commit, time, manifest and file blob ids."""

    repo: SnapshotRepo
    commit: str
    time: dt.datetime
    manifest: Manifest
    blobs: dict[str, str]

    @property
    def label(self) -> str:
        return f"{self.commit[:10]} ({format_timestamp(self.time)})"

    @property
    def tables(self) -> dict[str, TableEntry]:
        return self.manifest.tables

    def table(self, name: str) -> TableEntry:
        try:
            return self.manifest.tables[name]
        except KeyError:
            known = ", ".join(sorted(self.manifest.tables)) or "none"
            raise BadInput(
                f"unknown table {name!r} in snapshot {self.commit[:10]} (tables: {known})"
            ) from None

    def read_files(self, files: list[DataFile]) -> Iterator[bytes]:
        """Data files' contents, from git objects, checked against the manifest."""
        blobs = self.repo.read_blobs([self._blob(data_file.path) for data_file in files])
        for data_file, data in zip(files, blobs, strict=True):
            if hashlib.sha256(data).hexdigest() != data_file.sha256:
                raise SnapshotCorrupt(
                    f"{data_file.path} in snapshot {self.commit[:10]} does not match its "
                    "checksum in manifest.json: the snapshot was edited or damaged"
                )
            yield data

    def encoded_rows(self, entry: TableEntry) -> Iterator[bytes]:
        """The table's rows as they stand in its files, checked against the manifest."""
        for data_file, data in zip(entry.files, self.read_files(entry.files), strict=True):
            rows = split_rows(data)
            if len(rows) != data_file.rows:
                raise SnapshotCorrupt(
                    f"{data_file.path} in snapshot {self.commit[:10]} holds {len(rows)} rows, "
                    f"the manifest says {data_file.rows}"
                )
            yield from rows

    def rows(self, entry: TableEntry) -> Iterator[dict[str, Any]]:
        """The table's rows decoded to the Python types SQLAlchemy returns."""
        decoders = [
            (name, dec) for name, kind in entry.kinds().items() if (dec := codec.decoder(kind))
        ]
        # Python's json for JSON documents, as SQLAlchemy's JSON type reads them:
        # integers of any size stay integers.
        loads = json.loads if codec.json_columns(entry.kinds()) else orjson.loads
        for raw in self.encoded_rows(entry):
            row = loads(raw)
            for name, dec in decoders:
                row[name] = dec(row[name])
            yield row

    def _blob(self, path: str) -> str:
        try:
            return self.blobs[path]
        except KeyError:
            raise SnapshotCorrupt(
                f"{path} is listed in the manifest of {self.commit[:10]} but missing from it"
            ) from None


@contextmanager
def _opened(repo: RepoLike) -> Iterator[SnapshotRepo]:
    """The repository, opened here (and closed after) unless the caller holds it open."""
    if isinstance(repo, SnapshotRepo):
        yield repo
        return
    with SnapshotRepo.open(Path(repo)) as opened:
        yield opened


def resolve_snapshot(repo: RepoLike, at: str) -> Snapshot:
    """The snapshot named by a date, an ISO 8601 moment, or a git revision.

    A date (YYYY-MM-DD, in JSONSNAP_TZ or the system's zone) means the last
    snapshot at or before the end of that day; a moment, the last at or before it.
    The snapshot reads its rows through `repo`: pass an open SnapshotRepo, and
    close it when done, to stop git's helper processes at once.
    """
    repository = repo if isinstance(repo, SnapshotRepo) else SnapshotRepo.open(Path(repo))
    if repository.head() is None:
        raise BadInput(f"no snapshot yet in {repository.path}")
    commit = _resolve_commit(repository, at.strip())
    found = repository.manifest_at(commit)
    if found is None:
        raise BadInput(f"{at!r} names commit {commit[:10]}, which holds no snapshot")
    manifest, blobs = found
    return Snapshot(repository, commit, repository.commit_time(commit), manifest, blobs)


def _resolve_commit(repo: SnapshotRepo, at: str) -> str:
    if _DATE.match(at):
        try:
            day = dt.date.fromisoformat(at)
        except ValueError:
            raise BadInput(f"invalid date {at!r}: use YYYY-MM-DD") from None
        next_day = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), local_zone())
        return _last_at_or_before(repo, next_day - dt.timedelta(seconds=1), at)
    if _MOMENT.match(at):
        return _last_at_or_before(repo, parse_timestamp(at), at)
    commit = repo.rev(at)
    if commit is None:
        raise BadInput(
            f"no snapshot named {at!r}: give a date (YYYY-MM-DD), an ISO 8601 time, or a commit"
        )
    return commit


def _last_at_or_before(repo: SnapshotRepo, moment: dt.datetime, asked: str) -> str:
    cutoff = int(moment.timestamp())
    first: tuple[str, int] | None = None
    for commit, seconds in repo.history():
        if seconds <= cutoff:
            return commit
        first = (commit, seconds)
    assert first is not None
    when = dt.datetime.fromtimestamp(first[1], local_zone()).isoformat()
    raise BadInput(f"no snapshot on or before {asked}; the first is {when}")


def load_snapshot(
    repo: RepoLike, at: str = "HEAD", tables: Sequence[str] = ()
) -> dict[str, list[dict[str, Any]]]:
    """Every table (or the chosen ones) of a past snapshot: {table: [rows]}, decoded."""
    with _opened(repo) as repository:
        snapshot = resolve_snapshot(repository, at)
        names = list(tables) or sorted(snapshot.manifest.tables)
        entries = [snapshot.table(name) for name in names]
        return {entry.name: list(snapshot.rows(entry)) for entry in entries}


def list_snapshots(repo: RepoLike, table: str | None = None) -> list[SnapshotInfo]:
    """The history, newest first; with `table`, only the snapshots that changed it."""
    with _opened(repo) as repository:
        infos = [_info(commit, seconds, body) for commit, seconds, body in repository.log()]
    if table is not None:
        infos = [info for info in infos if table in info.summary]
    return infos


def _info(commit: str, seconds: int, body: str) -> SnapshotInfo:
    lines = body.strip().splitlines()
    summary: dict[str, TableChange] = {}
    for line in lines:
        if line.startswith(_TRAILER):
            try:
                data = orjson.loads(line.removeprefix(_TRAILER))
                summary = {name: TableChange(**counts) for name, counts in data.items()}
            except (orjson.JSONDecodeError, TypeError, AttributeError):
                summary = {}
    return SnapshotInfo(
        commit=commit,
        time=dt.datetime.fromtimestamp(seconds, dt.UTC),
        subject=lines[0] if lines else "",
        summary=summary,
    )


class LiveDatabase:
    """The database as it is now, read by the export path into a scratch folder."""

    label = "db"

    def __init__(self, manifest: Manifest, staged: dict[str, Path]) -> None:
        self.manifest = manifest
        self.staged = staged

    @property
    def tables(self) -> dict[str, TableEntry]:
        return self.manifest.tables

    def read_files(self, files: list[DataFile]) -> Iterator[bytes]:
        return staged_reader(self.staged)(files)

    def encoded_rows(self, entry: TableEntry) -> Iterator[bytes]:
        for data in self.read_files(entry.files):
            yield from split_rows(data)


@contextmanager
def read_live(engine: Engine, selection: Selection) -> Iterator[LiveDatabase]:
    with tempfile.TemporaryDirectory(prefix="jsonsnap-") as scratch:
        manifest, staged = read_database(engine, Path(scratch), selection)
        yield LiveDatabase(manifest, staged)


@dataclass
class DiffResult:
    """What `diff_snapshots` found: the two sides, and the tables that differ."""

    old: str
    new: str
    tables: dict[str, TableDiff]

    def as_dict(self) -> dict[str, Any]:
        return {
            "from": self.old,
            "to": self.new,
            "tables": {name: diff.as_dict() for name, diff in self.tables.items()},
        }


def diff_snapshots(
    repo: RepoLike,
    old: str,
    new: str = "HEAD",
    *,
    engine: Engine | None = None,
    tables: Sequence[str] = (),
) -> DiffResult:
    """Row-level differences between two snapshots; either side may be "db", the live database.

    The database is read exactly as an export would read it (same tables, same
    excluded columns as the newest snapshot), so `diff HEAD db` shows what the
    next export would commit.
    """
    with _opened(repo) as repository, ExitStack() as stack:
        sides = [_side(repository, spec, engine, stack) for spec in (old, new)]
        return DiffResult(sides[0].label, sides[1].label, diff_sides(sides[0], sides[1], tables))


def _side(repo: SnapshotRepo, spec: str, engine: Engine | None, stack: ExitStack) -> Side:
    if spec != "db":
        return resolve_snapshot(repo, spec)
    if engine is None:
        raise BadInput("comparing with 'db' needs a database")
    head = repo.manifest_at("HEAD") if repo.head() else None
    selection = Selection.of(head[0]) if head else Selection()
    return stack.enter_context(read_live(engine, selection))
