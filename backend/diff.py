"""Row-level comparison keyed by primary key.

Used for the per-table summary of every commit message. It compares the raw row
bytes of the files that changed, never the whole snapshot: rows in an unchanged
file are unchanged, and a row whose bytes match the other side's is skipped
without parsing any JSON.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass
from itertools import zip_longest

import orjson

from backend.codec import canonical
from backend.layout import DataFile, TableEntry, split_rows

ReadFile = Callable[[DataFile], bytes]


@dataclass
class TableChange:
    """Rows added, deleted and changed in one table between two snapshots."""

    added: int = 0
    deleted: int = 0
    changed: int = 0
    note: str | None = None  # "new table", "dropped", "schema changed"

    def __bool__(self) -> bool:
        return bool(self.added or self.deleted or self.changed or self.note)

    def describe(self) -> str:
        parts = [
            f"{sign}{count}"
            for sign, count in (("+", self.added), ("-", self.deleted), ("~", self.changed))
            if count
        ]
        if self.note:
            parts.append(f"({self.note})")
        return " ".join(parts)

    def as_dict(self) -> dict[str, int | str | None]:
        return {
            "added": self.added,
            "deleted": self.deleted,
            "changed": self.changed,
            "note": self.note,
        }


def compare_tables(
    old: TableEntry | None, new: TableEntry | None, read_old: ReadFile, read_new: ReadFile
) -> TableChange:
    """What changed in one table, reading only the files whose checksum changed."""
    if old is None and new is None:
        return TableChange()
    if old is None:
        assert new is not None
        return TableChange(added=new.rows, note="new table")
    if new is None:
        return TableChange(deleted=old.rows, note="dropped")
    same = {(f.path, f.sha256) for f in old.files} & {(f.path, f.sha256) for f in new.files}
    old_rows = [f for f in old.files if (f.path, f.sha256) not in same]
    new_rows = [f for f in new.files if (f.path, f.sha256) not in same]
    key_columns = new.primary_key
    if key_columns:
        change = compare_rows(
            _read_all(old_rows, read_old), _read_all(new_rows, read_new), _key_by(key_columns)
        )
    else:
        change = compare_rows(
            _numbered(_read_all(old_rows, read_old)),
            _numbered(_read_all(new_rows, read_new)),
            lambda row: row,
        )
    if old.columns != new.columns or old.primary_key != new.primary_key:
        change.note = "schema changed"
    return change


def compare_rows(
    old: Iterable[Hashable], new: Iterable[Hashable], key_of: Callable[[Hashable], Hashable]
) -> TableChange:
    """Count added, deleted and changed rows of two streams in the same key order.

    Both streams come sorted the same way, so walking them side by side keeps
    in memory only the rows not yet matched. Once a key is found on both sides,
    every row still pending on either side before it can never match (it would
    break the shared order), so it is counted and dropped.
    """
    change = TableChange()
    pending_old: OrderedDict[Hashable, Hashable] = OrderedDict()
    pending_new: OrderedDict[Hashable, Hashable] = OrderedDict()
    for old_row, new_row in zip_longest(old, new):
        if old_row is not None and old_row == new_row:
            change.deleted += len(pending_old)
            change.added += len(pending_new)
            pending_old.clear()
            pending_new.clear()
            continue
        if old_row is not None:
            _place(old_row, key_of(old_row), pending_old, pending_new, change, side="old")
        if new_row is not None:
            _place(new_row, key_of(new_row), pending_new, pending_old, change, side="new")
    change.deleted += len(pending_old)
    change.added += len(pending_new)
    return change


def _place(
    row: Hashable,
    key: Hashable,
    mine: OrderedDict[Hashable, Hashable],
    other: OrderedDict[Hashable, Hashable],
    change: TableChange,
    *,
    side: str,
) -> None:
    if key not in other:
        mine[key] = row
        return
    # Everything pending on my side precedes this key, so it is unmatched for good;
    # on the other side, everything pending before the match is too.
    unmatched_mine = len(mine)
    mine.clear()
    unmatched_other = 0
    while True:
        other_key, other_row = other.popitem(last=False)
        if other_key == key:
            break
        unmatched_other += 1
    if side == "old":
        change.deleted += unmatched_mine
        change.added += unmatched_other
    else:
        change.added += unmatched_mine
        change.deleted += unmatched_other
    if other_row != row:
        change.changed += 1


def _read_all(files: list[DataFile], read: ReadFile) -> Iterator[bytes]:
    for data_file in files:
        yield from split_rows(read(data_file))


def _numbered(rows: Iterator[bytes]) -> Iterator[tuple[bytes, int]]:
    """Tell duplicate rows of a key-less table apart: the n-th copy is (row, n)."""
    previous, count = None, 0
    for row in rows:
        count = count + 1 if row == previous else 0
        previous = row
        yield row, count


def _key_by(columns: list[str]) -> Callable[[Hashable], Hashable]:
    def key_of(row: Hashable) -> Hashable:
        assert isinstance(row, bytes)
        values = orjson.loads(row)
        return canonical([values.get(c) for c in columns])

    return key_of
