"""The daily job: reflect, read in one transaction, encode, and commit if changed.

Nothing is written to the work tree while the database is being read. Data
files are staged inside .git, compared with HEAD by checksum, and only the
changed ones are stored; `SnapshotRepo.commit` then moves HEAD in one step. So
a failure at any point before that step leaves the repository exactly as it was.
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib.resources
import logging
import os
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SAWarning
from sqlalchemy.sql import column as sql_column
from sqlalchemy.sql import table as sql_table

from backend import codec, layout
from backend.config import author_identity, format_timestamp, parse_timestamp
from backend.db import translate_db_errors
from backend.dialects import Dialect, for_engine
from backend.dialects.base import RowSource
from backend.diff import (
    TableChange,
    compare_manifests,
    compare_namesakes,
    compare_tables,
    counts_by_file,
)
from backend.errors import BadInput, RepoError
from backend.layout import DataFile, Manifest, TableEntry
from backend.repo import SnapshotRepo, StatKey
from backend.writer import Batch, ExternalSorter, Held, TableWriter, staged_reader

_log = logging.getLogger(__name__)

#: Progress callback: (table, rows done, rows in the table).
Progress = Callable[[str, int, int], None]

_BATCH = 2000


@dataclass
class ExportResult:
    """What one export did: the new commit (None when nothing changed) and per-table changes."""

    commit: str | None
    timestamp: str
    summary: dict[str, TableChange]
    rows: dict[str, int] = field(default_factory=dict)
    #: Why the push failed, when one was asked for; the commit is kept locally.
    push_error: str | None = None

    @property
    def changed(self) -> bool:
        return self.commit is not None


@dataclass(frozen=True)
class Selection:
    """Which part of the database a snapshot holds."""

    schema: str | None = None
    tables: Sequence[str] = ()
    exclude_tables: Sequence[str] = ()
    exclude_columns: Sequence[str] = ()
    #: False: names that do not exist (any more) are skipped, not refused. Restore
    #: uses it to export the way the last snapshot did, even after tables vanished.
    strict: bool = True

    def to_json(self) -> dict[str, list[str]]:
        """As recorded in the manifest, so a restore can export the same way."""
        return {
            "tables": sorted(self.tables),
            "exclude_tables": sorted(self.exclude_tables),
            "exclude_columns": sorted(self.exclude_columns),
        }

    @classmethod
    def of(cls, manifest: Manifest) -> Selection:
        """The selection the snapshot described by `manifest` was made with."""
        chosen = manifest.selection
        return cls(
            schema=manifest.schema,
            tables=tuple(chosen.get("tables", ())),
            exclude_tables=tuple(chosen.get("exclude_tables", ())),
            exclude_columns=tuple(chosen.get("exclude_columns", ())),
        )


@dataclass(frozen=True)
class _Reflected:
    """One table as the inspector describes it."""

    name: str
    columns: list[Any]  # ReflectedColumn
    primary_key: list[str]
    foreign_keys: list[Any]  # ReflectedForeignKeyConstraint
    excluded: list[str]


@dataclass
class _TablePlan:
    """One table as reflected: what to select, how to encode it, how to order it."""

    name: str
    source: RowSource
    entry: TableEntry
    names: list[str]
    encoders: list[codec.Encoder | None]
    statement: Any


def export_snapshot(
    engine: Engine,
    repo_path: str | os.PathLike[str],
    *,
    schema: str | None = None,
    tables: Sequence[str] = (),
    exclude_tables: Sequence[str] = (),
    exclude_columns: Sequence[str] = (),
    timestamp: str | dt.datetime | None = None,
    lock_timeout: float = 600,
    progress: Progress | None = None,
    push: bool = False,
) -> ExportResult:
    """Export every table (or the chosen ones) into the snapshot repository.

    Commits only when the snapshot differs from HEAD, dated `timestamp` (default
    now), with a message that summarises the rows added, deleted and changed.
    Holds the repository lock for the whole run; raises `LockTimeout` if another
    run keeps it longer than `lock_timeout` seconds. With `push`, pushes to the
    remote afterwards; a failed push is reported in `push_error`, not raised,
    since the snapshot itself is safe and the next push carries it.
    """
    when = parse_timestamp(timestamp)
    selection = Selection(schema, tuple(tables), tuple(exclude_tables), tuple(exclude_columns))
    author_identity()  # a malformed JSONSNAP_AUTHOR is bad input: fail before any work
    if not (Path(repo_path) / ".git").exists():
        _check_reachable(engine)  # an unreachable database must not leave an empty repo behind
    with SnapshotRepo.open(Path(repo_path), create=True) as repo, repo.lock(lock_timeout):
        repo.recover()
        check_time_order(repo, when)
        if push and repo.remote_url() is None:
            raise BadInput("--push needs a remote: use `jsonsnap remote set URL`")
        with repo.staging() as stage, _Beside(repo) as beside:
            manifest, staged = read_database(
                engine,
                stage,
                selection,
                progress=progress,
                on_file=beside.on_file,
                on_table=beside.on_table,
                held=beside.head.holds,
            )
            result = commit_snapshot(repo, manifest, staged, when=when, prepared=beside.results())
        if push:
            try:
                repo.push()
            except RepoError as exc:
                result.push_error = str(exc)
        return result


@dataclass(frozen=True)
class HeadState:
    """The snapshot at HEAD as this run found it: read once, shared by all its steps."""

    commit: str | None
    manifest: Manifest | None
    blobs: dict[str, str]  # path -> blob id, the whole tree
    repo: SnapshotRepo

    @classmethod
    def of(cls, repo: SnapshotRepo) -> HeadState:
        head = repo.head()
        previous = repo.manifest_at(head) if head else None
        manifest, blobs = previous if previous else (None, {})
        return cls(head, manifest, blobs, repo)

    @property
    def tables(self) -> dict[str, TableEntry]:
        return self.manifest.tables if self.manifest else {}

    @functools.cached_property
    def files(self) -> dict[str, DataFile]:
        return {f.path: f for t in self.tables.values() for f in t.files if f.path in self.blobs}

    def holds(self, data_file: DataFile) -> bool:
        """Whether HEAD already has this exact file, so it needs no new object."""
        held = self.files.get(data_file.path)
        return held is not None and held.sha256 == data_file.sha256

    def read(self, files: list[DataFile]) -> Iterator[bytes]:
        return self.repo.read_head_files(files, self.blobs, self.vouched)

    @functools.cached_property
    def vouched(self) -> dict[str, StatKey]:
        return self.repo.vouched_files(self.blobs)

    @functools.cached_property
    def following(self) -> dict[str, str | None]:
        """Path -> the path of the next file of its table at HEAD (None for the last)."""
        return {
            f.path: (t.files[i + 1].path if i + 1 < len(t.files) else None)
            for t in self.tables.values()
            for i, f in enumerate(t.files)
        }

    def release(self, data_file: DataFile) -> None:
        """Deletes HEAD's copy of a file that the commit replaces, as soon as it is read.

        Freeing a large file's blocks is slow on some file systems (about 1.7 ms
        a shard on ext4 with online discard): done here, on a worker while the
        read goes on, it is not paid in the checkout after the commit. A file
        is released only when it changed, so a commit follows unless the run
        fails, and then HEAD's files are checked out again (`_Beside.__exit__`).
        """
        (self.repo.path / data_file.path).unlink(missing_ok=True)


@dataclass
class Prepared:
    """What was done beside the read, for the commit: HEAD as it was read, the
    blob ids of files already stored, and the row changes of the tables already compared."""

    head: HeadState
    stored: dict[str, str] = field(default_factory=dict)
    changes: dict[str, TableChange] = field(default_factory=dict)


#: Told of each data file as soon as it is complete: its table, itself, where it
#: was staged, and the path of the table's next file (None for the last).
OnFile = Callable[[TableEntry, DataFile, Path, str | None], None]
#: Told of each table as soon as its files are complete, with where they were staged.
OnTable = Callable[[TableEntry, dict[str, Path]], None]


class _Beside:
    """Work on the finished files and tables, on a worker thread while the read goes on.

    Each changed file is written into git's object store (see BlobStore), and
    each table is compared with HEAD for the commit's summary: after the
    largest tables, which are read first, the commit has little left to do.
    """

    def __init__(self, repo: SnapshotRepo) -> None:
        self.head = HeadState.of(repo)
        self.store = repo.blob_store(self.head.commit)
        self.pool = _Worker("beside")
        self.files: list[Future[TableChange | None]] = []
        self.counted: dict[str, Future[TableChange | None]] = {}
        self.changes: dict[str, Future[TableChange]] = {}
        self.released = False

    def on_file(
        self, entry: TableEntry, data_file: DataFile, local: Path, following: str | None
    ) -> None:
        # Files HEAD holds never come here (read_database's `held`).
        old = self.head.files.get(data_file.path)
        # Shards are named by their first key: one that starts and ends where
        # its namesake did holds the same keys, so the two compare alone.
        if old is not None and counts_by_file(entry) and self.head.following[old.path] == following:
            future = self.pool.submit(self._finish_file, data_file, local, old, entry.primary_key)
            self.counted[data_file.path] = future
        else:
            future = self.pool.submit(self._finish_file, data_file, local, None, [])
        self.files.append(future)

    def _finish_file(
        self, data_file: DataFile, local: Path, old: DataFile | None, key: list[str]
    ) -> TableChange | None:
        """Stores the file's object; with its namesake at HEAD, counts the rows that changed."""
        self.store.write(data_file.path, local)
        if old is None:
            return None
        (old_data,) = self.head.read([old])
        change = compare_namesakes(old_data, local.read_bytes(), key)
        # A counted file is never read again: its table's comparison skips it.
        self.released = True
        self.head.release(old)
        return change

    def on_table(self, entry: TableEntry, staged: dict[str, Path]) -> None:
        old = self.head.tables.get(entry.name)
        self.changes[entry.name] = self.pool.submit(self._compare, old, entry, staged)

    def _compare(
        self, old: TableEntry | None, new: TableEntry, staged: dict[str, Path]
    ) -> TableChange:
        counted = {}
        for f in new.files:
            if f.path in self.counted:
                change = self.counted[f.path].result()
                assert change is not None  # a counted file's work returns its count
                counted[f.path] = change
        return compare_tables(old, new, self.head.read, staged_reader(staged), counted)

    def results(self) -> Prepared:
        """Helps the worker with what is left of its work, and waits for it."""
        self.pool.drain()
        for future in self.files:
            future.result()  # a file's failure surfaces here
        changes = {name: future.result() for name, future in self.changes.items()}
        return Prepared(self.head, self.store.stored(), changes)

    def __enter__(self) -> _Beside:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        failed = exc_type is not None
        self.pool.shutdown()
        try:
            if failed and self.released:
                self.head.repo.reset_work_tree()  # HEAD's released files, back in place
        except RepoError as error:
            # The run's own failure is the one to report; the next run's
            # recovery checks HEAD out again.
            _log.warning("could not check HEAD's files out again: %s", error)
        finally:
            self.store.close(failed=failed)


class _Worker:
    """One thread that runs jobs in the order they come; `drain` runs them on the caller's too.

    While the database is read, one worker is enough: on two cores a second
    only adds switching between threads (measured: about 0.1 s of a 1% edit).
    Once the read is over, the reading thread is free, and the jobs still
    queued (after a full export, most of a second of compression) run on both.
    A table's comparison comes after its files' jobs and waits for them, so
    neither thread ever waits for a job that no thread has started.
    """

    def __init__(self, name: str) -> None:
        self.jobs: deque[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]] = deque()
        self.waiting = threading.Semaphore(0)  # a permit per job submitted
        self.closed = False
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def submit(self, job: Callable[..., _T], *args: Any) -> Future[_T]:
        future: Future[_T] = Future()
        self.jobs.append((future, job, args))
        self.waiting.release()
        return future

    def _next(self) -> tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None:
        try:
            return self.jobs.popleft()
        except IndexError:
            return None

    def _run(self) -> None:
        while True:
            self.waiting.acquire()
            job = self._next()
            if job is not None:
                _run_job(*job)
            elif self.closed:
                return
            # else the caller took this permit's job

    def drain(self) -> None:
        """Runs queued jobs on the calling thread until none is left to start."""
        while (job := self._next()) is not None:
            _run_job(*job)

    def shutdown(self) -> None:
        """Cancels the jobs not started (after a failure) and waits for the one running."""
        while (job := self._next()) is not None:
            job[0].cancel()
        self.closed = True
        self.waiting.release()
        self.thread.join()


_T = TypeVar("_T")


def _run_job(future: Future[_T], job: Callable[..., _T], args: tuple[Any, ...]) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        result = job(*args)
    except BaseException as exc:
        future.set_exception(exc)
        if not isinstance(exc, Exception):
            raise  # Ctrl-C in a job the caller runs: stop now, not after the queue
    else:
        future.set_result(result)


def _check_reachable(engine: Engine) -> None:
    with translate_db_errors(engine), engine.connect():
        pass


def check_time_order(repo: SnapshotRepo, when: dt.datetime) -> None:
    """Snapshots must be dated in commit order, or `--date` could not find them."""
    head = repo.head()
    if head is not None and when < repo.commit_time(head):
        raise BadInput(
            f"snapshot time {format_timestamp(when)} is before the last snapshot "
            f"({format_timestamp(repo.commit_time(head))}); snapshots must stay in time order"
        )


def read_database(
    engine: Engine,
    stage: Path,
    selection: Selection,
    *,
    progress: Progress | None = None,
    on_file: OnFile | None = None,
    on_table: OnTable | None = None,
    held: Held | None = None,
) -> tuple[Manifest, dict[str, Path]]:
    """Read the selected tables in one transaction into data files in `stage`.

    Returns the manifest and where each of its files was staged; `on_file`
    and `on_table` hear of each file and table as soon as it is complete.
    Files that `held` says the repository already has are not staged at all.
    """
    dialect = for_engine(engine)
    run = _Run(stage, {}, progress, on_file, on_table, held)
    with translate_db_errors(engine):
        return _read_database(engine, dialect, selection, run)


def _read_database(
    engine: Engine, dialect: Dialect, selection: Selection, run: _Run
) -> tuple[Manifest, dict[str, Path]]:
    with dialect.read_transaction(engine) as conn:
        schema_name = selection.schema or dialect.default_schema(conn)
        plans = _plan(conn, dialect, selection)
        # Progress bars draw one table at a time, so a run that shows them
        # reads the tables in turn; any other reads them side by side.
        wanted = 0 if run.progress else min(_READERS, len(plans)) - 1
        with dialect.sibling_readers(engine, conn, wanted) as siblings:
            sizes = dialect.table_sizes(conn, selection.schema, [p.name for p in plans])
            largest_first = sorted(plans, key=lambda p: -sizes.get(p.name, 0))
            _export_tables(dialect, [conn, *siblings], largest_first, run)
    manifest = Manifest(
        dialect=dialect.name,
        schema=schema_name,
        selection=selection.to_json(),
        tables={p.name: p.entry for p in plans},
    )
    return manifest, run.staged


#: Connections reading tables side by side, as `pg_dump --jobs 2`: the server's
#: work (printing rows) then runs on two cores.
_READERS = 2


@dataclass
class _Run:
    """What the tables of one read share: where files go, who hears of them, when to stop."""

    stage: Path
    staged: dict[str, Path]
    progress: Progress | None
    on_file: OnFile | None
    on_table: OnTable | None
    held: Held | None
    stop: threading.Event = field(default_factory=threading.Event)


class _Stopped(Exception):
    """Another reader failed: this one gives up its table."""


def _export_tables(
    dialect: Dialect, readers: list[Connection], plans: list[_TablePlan], run: _Run
) -> None:
    """Each reader takes the next table until none is left; the first failure stops all.

    The caller's connection reads in this thread, the others in helper threads;
    the failure re-raised is the real one, not a reader's reaction to it.
    """
    pending = list(plans)
    lock = threading.Lock()

    def work(conn: Connection) -> None:
        try:
            while not run.stop.is_set():
                with lock:
                    if not pending:
                        return
                    plan = pending.pop(0)
                plan.entry.files, plan.entry.sharded = _export_table(conn, dialect, plan, run)
                if run.on_table:
                    run.on_table(plan.entry, run.staged)
        except BaseException:
            run.stop.set()
            raise

    if len(readers) == 1:
        work(readers[0])
        return
    with ThreadPoolExecutor(len(readers) - 1, thread_name_prefix="reader") as pool:
        helpers = [pool.submit(work, conn) for conn in readers[1:]]
        failures: list[BaseException] = []
        try:
            work(readers[0])
        except BaseException as exc:
            failures.append(exc)
        failures += [e for e in (helper.exception() for helper in helpers) if e is not None]
    if failures:
        raise next((f for f in failures if not isinstance(f, _Stopped)), failures[0])


def _export_table(
    conn: Connection, dialect: Dialect, plan: _TablePlan, run: _Run
) -> tuple[list[DataFile], bool]:
    """Write one table's files to the staging folder, in key order."""
    on_file = functools.partial(run.on_file, plan.entry) if run.on_file else None
    writer = TableWriter(run.stage, plan.name, on_file, run.held)
    sorter = None if plan.source.primary_key else ExternalSorter(run.stage)
    sink = sorter.add if sorter else writer.add
    progress = run.progress
    total = _count(conn, plan) if progress else 0
    done = 0

    def take(keys: list[bytes], rows: list[bytes]) -> None:
        nonlocal done
        if run.stop.is_set():
            raise _Stopped
        sink(keys, rows)
        done += len(rows)
        if progress and rows:
            progress(plan.name, done, max(total, done))

    if not dialect.fast_rows(conn, plan.source, take):
        for batch in _encoded_batches(conn, plan):
            take(*batch)
    if progress and not done:
        progress(plan.name, 0, 0)
    if sorter:
        for batch in sorter.sorted_batches():
            writer.add(*batch)
    return writer.finish(run.staged)


def _plan(conn: Connection, dialect: Dialect, selection: Selection) -> list[_TablePlan]:
    schema, only, exclude_tables = selection.schema, selection.tables, selection.exclude_tables
    inspector = inspect(conn)
    existing = set(inspector.get_table_names(schema=schema))
    where = f" in schema {schema!r}" if schema else ""
    for name in [*only, *exclude_tables]:
        if name not in existing and selection.strict:
            raise BadInput(f"unknown table {name!r}{where}")
    chosen = sorted((set(only) & existing if only else existing) - set(exclude_tables))
    excluded = _excluded_columns(selection, inspector, existing)
    with warnings.catch_warnings():
        # SQLite columns of undeclared types reflect as NullType: read as stored.
        warnings.filterwarnings("ignore", "Did not recognize type", SAWarning)
        columns = inspector.get_multi_columns(schema=schema, filter_names=chosen)
    pks = inspector.get_multi_pk_constraint(schema=schema, filter_names=chosen)
    fks = inspector.get_multi_foreign_keys(schema=schema, filter_names=chosen)
    home = {schema, inspector.default_schema_name}
    reflected = [
        _Reflected(
            name=name,
            columns=columns[(schema, name)],
            primary_key=list(pks[(schema, name)].get("constrained_columns") or []),
            foreign_keys=[_same_schema_as_none(fk, home) for fk in fks[(schema, name)]],
            excluded=excluded.get(name, []),
        )
        for name in chosen
    ]
    return [_plan_table(conn, dialect, schema, table) for table in reflected]


def _same_schema_as_none(fk: Any, home: set[str | None]) -> Any:
    """A reference into the table's own schema is recorded as null, however it was
    reflected: SQLAlchemy names the schema only when asked for one explicitly, and
    the manifest must not change with how the export was called."""
    if fk.get("referred_schema") in home:
        return {**fk, "referred_schema": None}
    return fk


def _excluded_columns(
    selection: Selection, inspector: Any, existing: set[str]
) -> dict[str, list[str]]:
    """TABLE.COLUMN specs by table; either name may itself contain dots."""
    excluded: dict[str, list[str]] = {}
    schema = selection.schema
    for spec in selection.exclude_columns:
        for cut in [i for i, ch in enumerate(spec) if ch == "."]:
            table, col = spec[:cut], spec[cut + 1 :]
            if table in existing and col in {
                c["name"] for c in inspector.get_columns(table, schema)
            }:
                excluded.setdefault(table, []).append(col)
                break
        else:
            if selection.strict:
                raise BadInput(f"--exclude-column {spec!r} names no TABLE.COLUMN of this database")
    return excluded


def _plan_table(
    conn: Connection, dialect: Dialect, schema: str | None, table: _Reflected
) -> _TablePlan:
    name, key, excluded = table.name, table.primary_key, table.excluded
    hidden = sorted(set(excluded) & set(key))
    if hidden:
        raise BadInput(f"cannot exclude primary key column {name}.{hidden[0]}")
    declared = dialect.declared_types(conn, schema, name)
    kept = [c for c in table.columns if c["name"] not in excluded]
    kinds = {c["name"]: dialect.kind_of(c["type"]) for c in kept}
    entry = TableEntry(
        name=name,
        columns=[
            {
                "name": c["name"],
                "type": declared.get(c["name"]) or _type_name(c["type"]),
                "nullable": bool(c.get("nullable", True)),
                "kind": kinds[c["name"]],
            }
            for c in kept
        ],
        primary_key=key,
        foreign_keys=sorted(
            (
                {
                    "columns": fk["constrained_columns"],
                    "referred_schema": fk.get("referred_schema"),
                    "referred_table": fk["referred_table"],
                    "referred_columns": fk["referred_columns"],
                }
                for fk in table.foreign_keys
            ),
            key=orjson.dumps,
        ),
        excluded_columns=sorted(excluded),
    )
    tbl = sql_table(name, *[sql_column(c["name"], c["type"]) for c in kept], schema=schema)
    statement = select(*[dialect.select_expr(tbl.c[c["name"]], kinds[c["name"]]) for c in kept])
    if key:
        statement = statement.order_by(*[dialect.order_expr(tbl.c[k], kinds[k]) for k in key])
    return _TablePlan(
        name=name,
        source=RowSource(schema, name, kinds, key, _not_null(kept)),
        entry=entry,
        names=[c["name"] for c in kept],
        encoders=[codec.encoder(kinds[c["name"]]) for c in kept],
        statement=statement,
    )


def _not_null(columns: list[dict[str, Any]]) -> frozenset[str]:
    return frozenset(c["name"] for c in columns if not c.get("nullable", True))


def _type_name(sa_type: Any) -> str:
    try:
        return str(sa_type)
    except Exception:  # NullType and friends cannot render themselves
        return "NULL"


def _count(conn: Connection, plan: _TablePlan) -> int:
    subquery = plan.statement.order_by(None).subquery()
    return int(conn.execute(select(text("count(*)")).select_from(subquery)).scalar_one())


def _encoded_batches(conn: Connection, plan: _TablePlan) -> Iterator[Batch]:
    """Rows selected as Python values and encoded one by one: the portable path."""
    names, encoders = plan.names, plan.encoders
    key_index = [names.index(k) for k in plan.source.primary_key]
    result = conn.execution_options(stream_results=True, yield_per=_BATCH).execute(plan.statement)
    for partition in result.partitions():
        keys, rows = [], []
        for raw in partition:
            values = [v if enc is None else enc(v) for v, enc in zip(raw, encoders, strict=True)]
            row = codec.pretty_row(dict(zip(names, values, strict=True)))
            keys.append(codec.canonical([values[i] for i in key_index]) if key_index else row)
            rows.append(row)
        yield keys, rows


def commit_snapshot(
    repo: SnapshotRepo,
    manifest: Manifest,
    staged: dict[str, Path],
    *,
    when: dt.datetime,
    title: str | None = None,
    prepared: Prepared | None = None,
) -> ExportResult:
    """Commit staged files as the new snapshot if they differ from HEAD.

    The subject is `title` (default "snapshot <time>") followed by the
    per-table summary of rows added, deleted and changed. `prepared` holds
    what was already done while the database was read.
    """
    prepared = prepared or Prepared(HeadState.of(repo))
    head = prepared.head
    new_files = {f.path: f for t in manifest.tables.values() for f in t.files}
    changed = [p for p, f in new_files.items() if not head.holds(f)]
    blobs = {p: head.blobs[p] for p in new_files if p not in changed}
    stored = prepared.stored
    blobs.update((p, stored[p]) for p in changed if p in stored)
    missing = [p for p in changed if p not in stored]
    blobs.update(zip(missing, repo.store_files([staged[p] for p in missing]), strict=True))
    extra = {layout.MANIFEST: manifest.to_bytes(), layout.README: _snapshot_readme()}
    files = dict(staged)
    for path, data in extra.items():
        files[path] = local = repo.staging_dir / path
        local.write_bytes(data)
        (blobs[path],) = repo.store_files([local])
    summary = _summarize(head, manifest, staged=staged, known=prepared.changes)
    stamp = format_timestamp(when)
    message = _message(title or f"snapshot {stamp}", summary)
    commit = repo.commit(blobs, message, when, author_identity(), files, previous=head.blobs)
    return ExportResult(
        commit=commit,
        timestamp=stamp,
        summary=summary if commit else {},
        rows={name: t.rows for name, t in manifest.tables.items()},
    )


def _summarize(
    head: HeadState, new: Manifest, *, staged: dict[str, Path], known: dict[str, TableChange]
) -> dict[str, TableChange]:
    """Every table's changes: those `known` already, the others (dropped ones) compared now."""
    names = sorted((set(head.tables) | set(new.tables)) - set(known))
    summary = compare_manifests(head.tables, new.tables, head.read, staged_reader(staged), names)
    summary.update((name, change) for name, change in known.items() if change)
    return dict(sorted(summary.items()))


def _message(title: str, summary: dict[str, TableChange]) -> str:
    tables = "; ".join(f"{name} {change.describe()}" for name, change in summary.items())
    subject = f"{title}: {tables or 'no row changes'}"
    trailer = orjson.dumps(
        {name: change.as_dict() for name, change in summary.items()}, option=orjson.OPT_SORT_KEYS
    ).decode()
    return f"{subject}\n\njsonsnap-summary: {trailer}"


def _snapshot_readme() -> bytes:
    return importlib.resources.files("backend").joinpath("snapshot_readme.md").read_bytes()
