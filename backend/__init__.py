"""jsonsnap: a relational database's history, as deterministic JSON in git."""

from backend.diff import TableChange
from backend.errors import (
    BadInput,
    DatabaseFailure,
    JsonsnapError,
    LockTimeout,
    RepoError,
    RestoreConflict,
    SnapshotCorrupt,
)
from backend.export import ExportResult, Selection, export_snapshot
from backend.repo import init_repo
from backend.restore import RestoreResult, restore_snapshot
from backend.snapshot import diff_snapshots, list_snapshots, load_snapshot

__all__ = [
    "BadInput",
    "DatabaseFailure",
    "ExportResult",
    "JsonsnapError",
    "LockTimeout",
    "RepoError",
    "RestoreConflict",
    "RestoreResult",
    "Selection",
    "SnapshotCorrupt",
    "TableChange",
    "diff_snapshots",
    "export_snapshot",
    "init_repo",
    "list_snapshots",
    "load_snapshot",
    "restore_snapshot",
]
