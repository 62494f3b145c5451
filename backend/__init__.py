"""jsonsnap: a relational database's history, as deterministic JSON in git."""

from backend.diff import TableChange
from backend.errors import (
    BadInput,
    DatabaseFailure,
    JsonsnapError,
    LockTimeout,
    RepoError,
    SnapshotCorrupt,
)
from backend.export import ExportResult, Selection, export_snapshot
from backend.repo import init_repo

__all__ = [
    "BadInput",
    "DatabaseFailure",
    "ExportResult",
    "JsonsnapError",
    "LockTimeout",
    "RepoError",
    "Selection",
    "SnapshotCorrupt",
    "TableChange",
    "export_snapshot",
    "init_repo",
]
