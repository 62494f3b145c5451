"""Row-level comparison keyed by primary key.

Used for the per-table summary of every commit message, and for `jsonsnap diff`.
It compares the raw row bytes of the files that changed, never the whole
snapshot: rows in an unchanged file are unchanged, and a row whose bytes match
the other side's is skipped without parsing any JSON.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import zip_longest
from typing import Any, Protocol

import orjson

from backend import layout
from backend.codec import canonical, dumps_exact, parse_row_exact
from backend.errors import BadInput
from backend.layout import DataFile, TableEntry, iter_rows

#: The contents of data files, in order: from git objects or from a staging folder.
ReadFiles = Callable[[list[DataFile]], Iterable[bytes]]
#: Key kinds whose values sort in Python exactly as in the data files.
_ORDERED_KINDS = frozenset({"integer", "string"})


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
    old: TableEntry | None,
    new: TableEntry | None,
    read_old: ReadFiles,
    read_new: ReadFiles,
    counted: Mapping[str, TableChange] | None = None,
) -> TableChange:
    """What changed in one table, reading only the files whose checksum changed.

    `counted` may hold `compare_namesakes` results already worked out, by
    path, for namesakes that begin and end at the same keys on both sides.
    """
    if old is None and new is None:
        return TableChange()
    if old is None:
        assert new is not None
        return TableChange(added=new.rows, note="new table")
    if new is None:
        return TableChange(deleted=old.rows, note="dropped")
    same = {(f.path, f.sha256) for f in old.files} & {(f.path, f.sha256) for f in new.files}
    old_files = [f for f in old.files if (f.path, f.sha256) not in same]
    new_files = [f for f in new.files if (f.path, f.sha256) not in same]
    change = _compare_files(old_files, new_files, read_old, read_new, new, counted=counted or {})
    if old.columns != new.columns or old.primary_key != new.primary_key:
        change.note = "schema changed"
    return change


def counts_by_file(table: TableEntry) -> bool:
    """Whether a changed shard of this table can be compared alone with its namesake.

    Shards are named by the key that starts them, so where both sides have the
    same names they have the same cuts, and no row can have moved from one
    file to another. That needs a key whose Python order is the files' order.
    """
    kinds = table.kinds()
    return bool(table.primary_key) and all(
        kinds.get(column) in _ORDERED_KINDS for column in table.primary_key
    )


def compare_namesakes(old_data: bytes, new_data: bytes, key: list[str]) -> TableChange:
    """Rows added, deleted and changed between two versions of one shard.

    The common nightly case: as many rows as before, and the differing ones
    keep their keys, so they are all changes, found by comparing the rows'
    bytes in bulk. Any other pair is merged row by row.
    """
    key_of = _key_values(key)
    differing = layout.differing_rows(old_data, new_data)
    if differing is not None and all(key_of(old) == key_of(new) for old, new in differing):
        return TableChange(changed=len(differing))
    return merge_rows(layout.split_rows(old_data), layout.split_rows(new_data), key_of)


def _compare_files(
    old_files: list[DataFile],
    new_files: list[DataFile],
    read_old: ReadFiles,
    read_new: ReadFiles,
    new: TableEntry,
    *,
    counted: Mapping[str, TableChange],
) -> TableChange:
    # A counted pair covers the same keys on both sides, so the other files,
    # in order, still hold every other changed row in key order.
    parts = [counted[f.path] for f in new_files if f.path in counted]
    old_files = [f for f in old_files if f.path not in counted]
    new_files = [f for f in new_files if f.path not in counted]
    parts.append(_compare_rest(old_files, new_files, read_old, read_new, new))
    return _total(parts)


def _total(parts: list[TableChange]) -> TableChange:
    return TableChange(
        added=sum(p.added for p in parts),
        deleted=sum(p.deleted for p in parts),
        changed=sum(p.changed for p in parts),
    )


def _compare_rest(
    old_files: list[DataFile],
    new_files: list[DataFile],
    read_old: ReadFiles,
    read_new: ReadFiles,
    new: TableEntry,
) -> TableChange:
    if not old_files or not new_files:  # a side with nothing changed: no row to read
        return TableChange(
            added=sum(f.rows for f in new_files), deleted=sum(f.rows for f in old_files)
        )
    if counts_by_file(new) and [f.path for f in old_files] == [f.path for f in new_files]:
        pairs = zip(read_old(old_files), read_new(new_files), strict=True)
        return _total([compare_namesakes(o, n, new.primary_key) for o, n in pairs])
    old_rows, new_rows = _read_all(old_files, read_old), _read_all(new_files, read_new)
    if not new.primary_key:  # sorted by their bytes: bytes order is file order
        return merge_rows(_numbered(old_rows), _numbered(new_rows), lambda row: row)
    if counts_by_file(new):
        return merge_rows(old_rows, new_rows, _key_values(new.primary_key))
    return compare_rows(old_rows, new_rows, _key_by(new.primary_key))


def merge_rows(old: Iterable[Any], new: Iterable[Any], key_of: Callable[[Any], Any]) -> TableChange:
    """Count added, deleted and changed rows of two streams sorted by `key_of`: O(1) memory.

    Only for keys whose Python order is the files' order: integers, and text,
    which both databases sort by code point (PostgreSQL with COLLATE "C").
    """
    change = TableChange()
    old_it, new_it = iter(old), iter(new)
    old_row, new_row = next(old_it, None), next(new_it, None)
    while old_row is not None and new_row is not None:
        if old_row == new_row:  # the common case, decided without parsing
            old_row, new_row = next(old_it, None), next(new_it, None)
            continue
        old_key, new_key = key_of(old_row), key_of(new_row)
        if old_key == new_key:
            change.changed += 1
            old_row, new_row = next(old_it, None), next(new_it, None)
        elif old_key < new_key:
            change.deleted += 1
            old_row = next(old_it, None)
        else:
            change.added += 1
            new_row = next(new_it, None)
    change.deleted += (old_row is not None) + sum(1 for _ in old_it)
    change.added += (new_row is not None) + sum(1 for _ in new_it)
    return change


def compare_manifests(
    old: dict[str, TableEntry],
    new: dict[str, TableEntry],
    read_old: ReadFiles,
    read_new: ReadFiles,
    names: Iterable[str] | None = None,
) -> dict[str, TableChange]:
    """The tables that differ (all of both sides, or `names`), with their changes."""
    summary = {}
    for name in sorted(set(old) | set(new)) if names is None else names:
        change = compare_tables(old.get(name), new.get(name), read_old, read_new)
        if change:
            summary[name] = change
    return summary


def compare_rows(
    old: Iterable[Hashable], new: Iterable[Hashable], key_of: Callable[[Hashable], Hashable]
) -> TableChange:
    """Count added, deleted and changed rows of two streams in the same key order.

    For keys Python cannot order as the database does (decimals, dates...).
    Both streams come sorted the same way, so walking them side by side keeps
    in memory only the rows not yet matched, as a hash of their bytes. Once a
    key is found on both sides, every row still pending on either side before
    it can never match (it would break the shared order), so it is counted and
    dropped.
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
            _place(hash(old_row), key_of(old_row), pending_old, pending_new, change, side="old")
        if new_row is not None:
            _place(hash(new_row), key_of(new_row), pending_new, pending_old, change, side="new")
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


def _read_all(files: list[DataFile], read: ReadFiles) -> Iterator[bytes]:
    for data in read(files):
        yield from iter_rows(data)


def _numbered(rows: Iterator[bytes]) -> Iterator[tuple[bytes, int]]:
    """Tell duplicate rows of a key-less table apart: the n-th copy is (row, n)."""
    previous, count = None, 0
    for row in rows:
        count = count + 1 if row == previous else 0
        previous = row
        yield row, count


def _key_values(columns: list[str]) -> Callable[[Any], list[Any]]:
    def key_of(row: Any) -> list[Any]:
        values = orjson.loads(row)
        return [values.get(c) for c in columns]

    return key_of


def _key_by(columns: list[str]) -> Callable[[Hashable], Hashable]:
    """The key as canonical bytes: hashable, for dictionaries."""
    values_of = _key_values(columns)

    def key_of(row: Hashable) -> Hashable:
        return canonical(values_of(row))

    return key_of


# --- row-level diff between two snapshots, or a snapshot and the database ----


class Side(Protocol):
    """One side of a diff: a snapshot, or the live database read the same way."""

    @property
    def label(self) -> str: ...

    @property
    def tables(self) -> dict[str, TableEntry]: ...

    def encoded_rows(self, entry: TableEntry) -> Iterator[bytes]: ...


@dataclass
class RowDiff:
    """One changed row: its key, and each changed field as (old, new)."""

    key: dict[str, Any]
    fields: dict[str, tuple[Any, Any]]

    def as_dict(self) -> dict[str, Any]:
        changes = {path: {"old": old, "new": new} for path, (old, new) in self.fields.items()}
        return {"key": self.key, "changes": changes}


@dataclass
class TableDiff:
    """Rows added and removed (by key) and rows changed in one table."""

    added: list[dict[str, Any]] = field(default_factory=list)
    removed: list[dict[str, Any]] = field(default_factory=list)
    changed: list[RowDiff] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "removed": self.removed,
            "changed": [row.as_dict() for row in self.changed],
        }


def diff_sides(old: Side, new: Side, tables: Sequence[str] = ()) -> dict[str, TableDiff]:
    """Row-level differences per table, keyed by primary key, computed with deepdiff.

    Only files whose checksums differ are read. Rows are matched by key, so a
    row that moved, or a change of key order, is never reported.
    """
    names = sorted(set(old.tables) | set(new.tables))
    for name in tables:
        if name not in names:
            raise BadInput(f"unknown table {name!r} (tables: {', '.join(names) or 'none'})")
    result = {}
    for name in tables or names:
        table_diff = _diff_table(old, new, old.tables.get(name), new.tables.get(name))
        if table_diff:
            result[name] = table_diff
    return result


def _diff_table(
    old: Side, new: Side, old_entry: TableEntry | None, new_entry: TableEntry | None
) -> TableDiff:
    key_columns = (new_entry or old_entry).primary_key  # type: ignore[union-attr]
    same = (
        {(f.path, f.sha256) for f in old_entry.files}
        & {(f.path, f.sha256) for f in new_entry.files}
        if old_entry and new_entry
        else set()
    )
    before = _keyed(old, old_entry, same, key_columns)
    after = _keyed(new, new_entry, same, key_columns)
    # In file order, which is key order: the diff reads in the order of the table.
    result = TableDiff(
        added=[_key_dict(key, key_columns) for key in after if key not in before],
        removed=[_key_dict(key, key_columns) for key in before if key not in after],
    )
    for key, row in after.items():
        if key in before and before[key] != row:
            fields = _changed_fields(parse_row_exact(before[key]), parse_row_exact(row))
            if fields:
                result.changed.append(RowDiff(_key_dict(key, key_columns), fields))
    return result


def _keyed(
    side: Side, entry: TableEntry | None, same: set[tuple[str, str]], key_columns: list[str]
) -> dict[Hashable, bytes]:
    """Rows of the files not shared with the other side, by key (or by row and copy number)."""
    if entry is None:
        return {}
    changed = TableEntry(
        name=entry.name,
        columns=entry.columns,
        primary_key=entry.primary_key,
        foreign_keys=entry.foreign_keys,
        files=[f for f in entry.files if (f.path, f.sha256) not in same],
        sharded=entry.sharded,
    )
    rows = side.encoded_rows(changed)
    if key_columns:
        key_of = _key_by(key_columns)
        return {key_of(row): row for row in rows}
    return {numbered: numbered[0] for numbered in _numbered(rows)}


def _key_dict(key: Hashable, key_columns: list[str]) -> dict[str, Any]:
    if key_columns:
        assert isinstance(key, bytes)
        return dict(zip(key_columns, orjson.loads(key), strict=True))
    assert isinstance(key, tuple)
    row: dict[str, Any] = orjson.loads(key[0])
    return row


def _changed_fields(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    # Imported here: deepdiff (with pydantic) takes a tenth of a second to load,
    # which every export, cron run and API request would otherwise pay.
    from deepdiff import DeepDiff  # noqa: PLC0415
    from deepdiff.helper import NotPresent  # noqa: PLC0415

    def present(value: Any) -> Any:
        # deepdiff's marker for 'absent' (a column added or dropped) becomes None.
        return None if isinstance(value, NotPresent) else value

    tree = DeepDiff(old, new, view="tree", verbose_level=2)
    fields: dict[str, tuple[Any, Any]] = {}
    for levels in tree.values():
        for level in levels:
            path = ".".join(str(part) for part in level.path(output_format="list"))
            fields[path] = (present(level.t1), present(level.t2))
    return dict(sorted(fields.items()))


def describe_diff(diffs: dict[str, TableDiff]) -> list[str]:
    """The short, human form of a diff: a line per table, then one per row."""
    lines = []
    for name, table_diff in diffs.items():
        counts = TableChange(
            added=len(table_diff.added),
            deleted=len(table_diff.removed),
            changed=len(table_diff.changed),
        )
        lines.append(f"{name}: {counts.describe()}")
        lines += [f"  + {_show_key(key)}" for key in table_diff.added]
        lines += [f"  - {_show_key(key)}" for key in table_diff.removed]
        for row in table_diff.changed:
            changes = ", ".join(
                f"{path} {_show(old)} → {_show(new)}" for path, (old, new) in row.fields.items()
            )
            lines.append(f"  ~ {_show_key(row.key)}: {changes}")
    return lines


def _show_key(key: dict[str, Any]) -> str:
    return ", ".join(f"{column}={_show(value)}" for column, value in key.items())


def _show(value: Any) -> str:
    return dumps_exact(value, orjson.OPT_SORT_KEYS)
