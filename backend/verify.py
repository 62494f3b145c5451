"""`jsonsnap verify`: is the last snapshot sound, and does the database still match it?

Made for monitoring, so the answer is an exit code: 0 all good, 3 the database
has drifted from HEAD (normal between two exports, worth an alert if it lasts),
4 the snapshot repository is corrupt (act now). 1 and 2 keep their meaning for
every command: a failure (say, the database is unreachable) and bad input.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from sqlalchemy import Engine

from backend.diff import TableChange, compare_manifests
from backend.errors import JsonsnapError
from backend.export import Selection
from backend.layout import MANIFEST, README, TABLES_DIR
from backend.repo import SnapshotRepo
from backend.snapshot import LiveDatabase, Snapshot, read_live, resolve_snapshot

EXIT_OK = 0
EXIT_DRIFT = 3
EXIT_CORRUPT = 4


@dataclass
class VerifyReport:
    """Problems found in the repository, and the live database's drift from HEAD."""

    commit: str | None
    problems: list[str] = field(default_factory=list)
    drift: dict[str, TableChange] = field(default_factory=dict)
    checked_database: bool = False

    @property
    def status(self) -> str:
        return "corrupt" if self.problems else "drift" if self.drift else "ok"

    @property
    def exit_code(self) -> int:
        return {"ok": EXIT_OK, "drift": EXIT_DRIFT, "corrupt": EXIT_CORRUPT}[self.status]

    def as_dict(self) -> dict[str, object]:
        return {
            "status": self.status,
            "commit": self.commit,
            "problems": self.problems,
            "drift": {name: change.as_dict() for name, change in self.drift.items()},
            "checked_database": self.checked_database,
        }


def verify_snapshot(
    repo_path: str | os.PathLike[str], engine: Engine | None = None
) -> VerifyReport:
    """Check HEAD's files against the manifest, run `git fsck`, and compare with the database."""
    with SnapshotRepo.open(Path(repo_path)) as repo:
        return _verify(repo, engine)


def _verify(repo: SnapshotRepo, engine: Engine | None) -> VerifyReport:
    if repo.head() is None:
        return VerifyReport(commit=None, problems=["the repository holds no snapshot yet"])
    try:
        snapshot = resolve_snapshot(repo, "HEAD")
    except JsonsnapError as exc:
        return VerifyReport(commit=repo.head(), problems=[str(exc)])
    report = VerifyReport(commit=snapshot.commit)
    report.problems += _check_files(snapshot)
    report.problems += [f"git fsck: {line}" for line in repo.fsck()]
    if engine is not None:
        selection = replace(Selection.of(snapshot.manifest), strict=False)
        with read_live(engine, selection) as live:
            report.drift = _drift(snapshot, live)
        report.checked_database = True
    return report


def _check_files(snapshot: Snapshot) -> list[str]:
    problems = []
    for entry in snapshot.tables.values():
        try:
            for _ in snapshot.encoded_rows(entry):
                pass
        except JsonsnapError as exc:
            problems.append(str(exc))
    listed = {f.path for entry in snapshot.tables.values() for f in entry.files}
    problems += [
        f"{path} is in the snapshot but not in its manifest"
        for path in sorted(snapshot.blobs)
        if path.startswith(f"{TABLES_DIR}/") and path not in listed
    ]
    problems += [f"{name} is missing" for name in (MANIFEST, README) if name not in snapshot.blobs]
    return problems


def _drift(snapshot: Snapshot, live: LiveDatabase) -> dict[str, TableChange]:
    return compare_manifests(snapshot.tables, live.tables, snapshot.read_files, live.read_files)
