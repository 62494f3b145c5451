"""A past snapshot back into the database: previewed, backed up first, one transaction, recorded.

The order of steps is the safety of the feature:
1. resolve the snapshot and check every file it needs against the manifest;
2. check the live schema against it (missing tables and columns);
3. read the live database and show what the restore would change;
4. commit that live state as a normal snapshot, so the restore can be undone;
5. replace the tables' contents in one transaction (all or nothing);
6. export again and commit with "restore to <commit>", so HEAD equals the database.
The repository lock is held throughout, so no export interleaves.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Engine,
    Float,
    Interval,
    LargeBinary,
    Numeric,
    Text,
    Time,
    Uuid,
    inspect,
)
from sqlalchemy.engine import Connection

from backend import codec
from backend.config import format_timestamp, parse_timestamp
from backend.db import translate_db_errors
from backend.dialects import Dialect, for_engine
from backend.dialects.base import RowTarget
from backend.diff import TableChange, compare_manifests
from backend.errors import BadInput, RestoreConflict
from backend.export import Selection, commit_snapshot, read_database
from backend.layout import Manifest, TableEntry
from backend.repo import SnapshotRepo
from backend.snapshot import Snapshot, resolve_snapshot
from backend.writer import staged_reader

_GENERIC_TYPES: dict[str, Any] = {
    "integer": BigInteger(),
    "boolean": Boolean(),
    "decimal": Numeric(),
    "float": Float(53),
    "datetime_tz": DateTime(timezone=True),
    "datetime": DateTime(),
    "date": Date(),
    "time": Time(),
    "interval": Interval(),
    "bytes": LargeBinary(),
    "uuid": Uuid(),
    "json": JSON(),
}


@dataclass
class RestoreResult:
    """What a restore found and did; `applied` is False for a dry run or a refusal."""

    snapshot: str
    snapshot_time: str
    preview: dict[str, TableChange]
    warnings: list[str] = field(default_factory=list)
    applied: bool = False
    safety_commit: str | None = None
    #: The snapshot equal to the database before the restore: restore it to undo.
    undo: str | None = None
    restore_commit: str | None = None
    rows: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "snapshot": self.snapshot,
            "snapshot_time": self.snapshot_time,
            "preview": {name: change.as_dict() for name, change in self.preview.items()},
            "warnings": self.warnings,
            "applied": self.applied,
            "safety_commit": self.safety_commit,
            "undo": self.undo,
            "restore_commit": self.restore_commit,
            "rows": self.rows,
        }


#: Shown the preview, answers whether to go on.
Confirm = Callable[[RestoreResult], bool]


def restore_snapshot(
    engine: Engine,
    repo_path: str | os.PathLike[str],
    at: str,
    *,
    tables: Sequence[str] = (),
    dry_run: bool = False,
    confirm: Confirm | None = None,
    create_tables: bool = False,
    ignore_missing_columns: bool = False,
    lock_timeout: float = 600,
) -> RestoreResult:
    """Load the snapshot named by `at` (date, ISO time or revision) back into the database.

    Replaces the contents of the chosen tables (all of the snapshot's by
    default) in one transaction. Before that, the current state is committed
    as a snapshot, so the restore can itself be undone by a restore; after it,
    the restored state is committed as "restore to <commit>". With `dry_run`,
    or when `confirm` answers False, nothing is changed.
    """
    dialect = for_engine(engine)
    with SnapshotRepo.open(Path(repo_path)) as repo, repo.lock(lock_timeout):
        repo.recover()
        snapshot = resolve_snapshot(repo, at)
        chosen = [snapshot.table(name) for name in dict.fromkeys(tables or snapshot.tables)]
        for entry in chosen:  # every checksum before anything changes
            for _ in snapshot.encoded_rows(entry):
                pass
        schema = _target_schema(engine, dialect, snapshot.manifest)
        with translate_db_errors(engine):
            warnings = _check_schema(engine, schema, chosen, create_tables, ignore_missing_columns)
        head = repo.manifest_at("HEAD")
        selection = Selection.of(head[0] if head else snapshot.manifest)
        selection = replace(selection, schema=schema, strict=False)
        result = RestoreResult(
            snapshot=snapshot.commit,
            snapshot_time=format_timestamp(snapshot.time),
            preview={},
            warnings=warnings,
        )
        with repo.staging() as stage:
            live, staged = read_database(engine, stage, selection)
            result.preview = _preview(live, staged, snapshot, chosen)
            if dry_run or (confirm is not None and not confirm(result)):
                return result
            result.safety_commit = commit_snapshot(repo, live, staged, when=_now(repo)).commit
            result.undo = repo.head()
        with translate_db_errors(engine):
            result.rows = _apply(engine, dialect, snapshot, chosen, schema)
        result.applied = True
        with repo.staging() as stage:
            restored, staged = read_database(engine, stage, selection)
            title = f"restore to {snapshot.commit[:7]} (snapshot {result.snapshot_time})"
            recorded = commit_snapshot(repo, restored, staged, when=_now(repo), title=title)
            result.restore_commit = recorded.commit
        return result


def _now(repo: SnapshotRepo) -> dt.datetime:
    """Now, but never before HEAD: snapshot times must stay in commit order."""
    now = parse_timestamp(None)
    head = repo.head()
    return max(now, repo.commit_time(head)) if head else now


def _target_schema(engine: Engine, dialect: Dialect, manifest: Manifest) -> str | None:
    """The snapshot's schema when it comes from the same kind of database, else the default."""
    if manifest.dialect == dialect.name and manifest.schema:
        return manifest.schema
    with translate_db_errors(engine), engine.connect() as conn:
        return dialect.default_schema(conn)


def _check_schema(
    engine: Engine,
    schema: str | None,
    chosen: list[TableEntry],
    create_tables: bool,
    ignore_missing_columns: bool,
) -> list[str]:
    """Refuse what cannot be restored as asked; return warnings for what will be degraded."""
    inspector = inspect(engine)
    existing = set(inspector.get_table_names(schema=schema))
    warnings = []
    for entry in chosen:
        warnings += [
            f"{entry.name}.{column} is not in the snapshot (it was excluded): "
            "restored rows get its default"
            for column in entry.excluded_columns
        ]
        if entry.name not in existing:
            if not create_tables:
                raise BadInput(
                    f"table {entry.name!r} is in the snapshot but not in the database; "
                    "use --create-tables to create it from the manifest"
                )
            warnings.append(f"{entry.name} will be created from the manifest")
            continue
        live = {c["name"] for c in inspector.get_columns(entry.name, schema=schema)}
        missing = [c["name"] for c in entry.columns if c["name"] not in live]
        if missing and not ignore_missing_columns:
            raise RestoreConflict(
                f"column {entry.name}.{missing[0]} is in the snapshot but not in the database; "
                "use --ignore-missing-columns to restore without it"
            )
        warnings += [
            f"{entry.name}.{name} is not in the database: its values are left out"
            for name in missing
        ]
    return warnings


def _preview(
    live: Manifest, staged: dict[str, Path], snapshot: Snapshot, chosen: list[TableEntry]
) -> dict[str, TableChange]:
    """Per table, what the restore changes in the live database."""

    read_live = staged_reader(staged)
    names = [entry.name for entry in chosen]
    return compare_manifests(live.tables, snapshot.tables, read_live, snapshot.read_files, names)


def _apply(
    engine: Engine,
    dialect: Dialect,
    snapshot: Snapshot,
    chosen: list[TableEntry],
    schema: str | None,
) -> dict[str, int]:
    """Replace the tables' contents in one transaction; any failure rolls all of it back."""
    names = [entry.name for entry in chosen]
    counts = {}
    with dialect.write_transaction(engine) as conn:
        existing = set(inspect(conn).get_table_names(schema=schema))
        created = [entry for entry in chosen if entry.name not in existing]
        same_kind = snapshot.manifest.dialect == dialect.name
        for entry in created:
            dialect.create_table(conn, _create_ddl(conn, dialect, schema, entry, same_kind))
        pending = dialect.begin_replace(conn, schema, names)
        if not dialect.inline_foreign_keys():
            pending = [
                ddl for e in created for ddl in _foreign_key_ddl(conn, dialect, schema, e)
            ] + pending
        inspector = inspect(conn)
        for entry in chosen:
            live = {c["name"]: c for c in inspector.get_columns(entry.name, schema=schema)}
            columns = [
                c["name"]
                for c in entry.columns
                if c["name"] in live and not live[c["name"]].get("computed")
            ]
            target = RowTarget(
                schema=schema,
                table=entry.name,
                columns=columns,
                kinds=entry.kinds(),
                types={name: live[name]["type"] for name in columns},
            )
            counts[entry.name] = dialect.load(conn, target, _parsed_rows(snapshot, entry))
        dialect.end_replace(conn, schema, names, pending)
    return counts


def _parsed_rows(snapshot: Snapshot, entry: TableEntry) -> Iterator[dict[str, Any]]:
    documents = codec.json_columns(entry.kinds())
    for raw in snapshot.encoded_rows(entry):
        yield codec.parse_row(raw, documents)


def _create_ddl(
    conn: Connection, dialect: Dialect, schema: str | None, entry: TableEntry, same_kind: bool
) -> str:
    """CREATE TABLE from the manifest: the declared types when the database is of the
    same kind as the snapshot's, portable SQLAlchemy types otherwise."""
    quote = conn.dialect.identifier_preparer.quote
    parts = [
        f"{quote(c['name'])} {_column_type(conn, c, same_kind)}"
        + ("" if c["nullable"] else " NOT NULL")
        for c in entry.columns
    ]
    if entry.primary_key:
        parts.append(f"PRIMARY KEY ({', '.join(quote(k) for k in entry.primary_key)})")
    if dialect.inline_foreign_keys():
        parts += [_references(conn, dialect, schema, fk) for fk in entry.foreign_keys]
    return f"CREATE TABLE {dialect.quote(conn, schema, entry.name)} ({', '.join(parts)})"


def _foreign_key_ddl(
    conn: Connection, dialect: Dialect, schema: str | None, entry: TableEntry
) -> list[str]:
    table = dialect.quote(conn, schema, entry.name)
    return [
        f"ALTER TABLE {table} ADD {_references(conn, dialect, schema, fk)}"
        for fk in entry.foreign_keys
    ]


def _references(conn: Connection, dialect: Dialect, schema: str | None, fk: dict[str, Any]) -> str:
    quote = conn.dialect.identifier_preparer.quote
    referred = dialect.quote(conn, fk.get("referred_schema") or schema, fk["referred_table"])
    return (
        f"FOREIGN KEY ({', '.join(quote(c) for c in fk['columns'])}) "
        f"REFERENCES {referred} ({', '.join(quote(c) for c in fk['referred_columns'])})"
    )


def _column_type(conn: Connection, column: dict[str, Any], same_kind: bool) -> str:
    if same_kind:
        return str(column["type"])
    kind = column["kind"]
    if kind.startswith("array:"):
        if conn.dialect.name == "postgresql":
            inner = _GENERIC_TYPES.get(kind.removeprefix("array:"), Text())
            return f"{inner.compile(dialect=conn.dialect)}[]"
        return str(JSON().compile(dialect=conn.dialect))
    if kind == "any":
        return "" if conn.dialect.name == "sqlite" else "TEXT"
    return str(_GENERIC_TYPES.get(kind, Text()).compile(dialect=conn.dialect))


def describe_preview(result: RestoreResult) -> list[str]:
    """The human form of what a restore will change (or changed)."""
    lines = [f"restore to {result.snapshot[:10]} (snapshot {result.snapshot_time})"]
    if not result.preview:
        lines.append("  the database already equals the snapshot")
    lines += [f"  {name} {change.describe()}" for name, change in result.preview.items()]
    lines += [f"  warning: {warning}" for warning in result.warnings]
    return lines


__all__ = ["Confirm", "RestoreResult", "describe_preview", "restore_snapshot"]
