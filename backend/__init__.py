"""jsonsnap: a relational database's history, as deterministic JSON in git."""

from backend.errors import (
    BadInput,
    DatabaseFailure,
    JsonsnapError,
    LockTimeout,
    RepoError,
    SnapshotCorrupt,
)
from backend.export import ExportResult, TableChange, export_snapshot
from backend.repo import init_repo

__all__ = [
    "BadInput",
    "DatabaseFailure",
    "ExportResult",
    "JsonsnapError",
    "LockTimeout",
    "RepoError",
    "SnapshotCorrupt",
    "TableChange",
    "export_snapshot",
    "init_repo",
]
