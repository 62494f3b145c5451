"""The snapshot's shape on disk: file names, shard cuts and the manifest.

Export writes this layout; restore, diff and the fallback loader read it. It is
the contract documented in snapshots/README.md, so every rule here is one a
reader of the repository can check by hand.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from backend import speedups
from backend.errors import SnapshotCorrupt

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
README = "README.md"
TABLES_DIR = "tables"

#: A table with more rows than this, or more bytes than SHARD_MIN_BYTES, is split into shards.
SHARD_MIN_ROWS = 10_000
SHARD_MIN_BYTES = 16 * 1024 * 1024
#: A row whose key hashes to 0 modulo this starts a new shard: shards average this many rows.
SHARD_MEAN_ROWS = 2048
FIRST_SHARD = "first"
_FIBONACCI = 0x9E3779B97F4A7C15
_U64 = (1 << 64) - 1

_PLAIN = re.compile(r"^[a-z0-9_]{1,100}$")
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul"} | {
    f"{p}{i}" for p in ("com", "lpt") for i in range(10)
}


def table_stem(name: str) -> str:
    """A file-name stem for a table that is safe, readable and collision-free.

    Plain lower-case names are kept as they are. Any other name (upper case, a
    slash, a dot-dot, spaces, non-ASCII, a Windows device name) becomes a
    lower-case slug plus '~' and a hash of the exact name. '~' never occurs in a
    plain name, and the hash differs for different names, so two tables never
    share a file, even on case-insensitive file systems.
    """
    if _PLAIN.fullmatch(name) and name not in _WINDOWS_RESERVED:
        return name
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "_", ascii_name.lower()).strip("_")[:60] or "table"
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:12]
    return f"{slug}~{digest}"


def single_file(stem: str) -> str:
    return f"{TABLES_DIR}/{stem}.json"


def shard_file(stem: str, shard_name: str) -> str:
    return f"{TABLES_DIR}/{stem}/{shard_name}.json"


def cut_positions(keys: list[bytes]) -> list[int]:
    """The indexes of the keys that are cut points: rows that start a new shard.

    Cuts depend on the key alone, so inserting or deleting a row changes only
    the shard it falls in; no later shard moves. A key is a cut when its
    CRC-32, spread by Fibonacci hashing (even on sequential keys), times
    SHARD_MEAN_ROWS stays under 2**64 - 1. The test runs on every row of a
    large table, so it is cheap; the shard's name, needed once per shard, is
    a strong hash (`shard_name`).
    """
    # The same bound, on the spread alone: one product less per row.
    fibonacci, u64, limit = _FIBONACCI, _U64, -(-_U64 // SHARD_MEAN_ROWS)
    native = speedups.native
    if native is not None:
        return native.cut_positions(keys, fibonacci, limit)
    return [i for i, crc in enumerate(map(zlib.crc32, keys)) if (crc * fibonacci) & u64 < limit]


def shard_name(key: bytes) -> str:
    """The name of the shard a cut-point key starts."""
    return hashlib.blake2b(key, digest_size=8).hexdigest()


@dataclass(frozen=True)
class DataFile:
    """One file of a table's data: the whole table, or one shard of it."""

    path: str
    rows: int
    sha256: str


@dataclass
class TableEntry:
    """What the manifest records about one table."""

    name: str
    columns: list[dict[str, Any]]
    primary_key: list[str]
    foreign_keys: list[dict[str, Any]]
    excluded_columns: list[str] = field(default_factory=list)
    files: list[DataFile] = field(default_factory=list)
    sharded: bool = False

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    def kinds(self) -> dict[str, str]:
        return {c["name"]: c["kind"] for c in self.columns}

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "columns": self.columns,
            "excluded_columns": self.excluded_columns,
            "foreign_keys": self.foreign_keys,
            "primary_key": self.primary_key,
            "rows": self.rows,
        }
        if self.sharded:
            data["shards"] = [
                {"file": f.path, "rows": f.rows, "sha256": f.sha256} for f in self.files
            ]
        else:
            (only,) = self.files
            data["file"] = only.path
            data["sha256"] = only.sha256
        return data

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any]) -> TableEntry:
        if "shards" in data:
            files = [DataFile(s["file"], s["rows"], s["sha256"]) for s in data["shards"]]
        else:
            files = [DataFile(data["file"], data["rows"], data["sha256"])]
        return cls(
            name=name,
            columns=data["columns"],
            primary_key=data["primary_key"],
            foreign_keys=data["foreign_keys"],
            excluded_columns=data.get("excluded_columns", []),
            files=files,
            sharded="shards" in data,
        )


@dataclass
class Manifest:
    """The snapshot's table of contents: nothing in it changes unless the data does."""

    dialect: str
    schema: str | None
    selection: dict[str, list[str]]
    tables: dict[str, TableEntry]

    def to_bytes(self) -> bytes:
        data = {
            "format": FORMAT_VERSION,
            "dialect": self.dialect,
            "schema": self.schema,
            "selection": self.selection,
            "tables": {name: t.to_json() for name, t in self.tables.items()},
        }
        return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"

    @classmethod
    def from_bytes(cls, raw: bytes) -> Manifest:
        try:
            data = orjson.loads(raw)
            if data.get("format") != FORMAT_VERSION:
                raise SnapshotCorrupt(
                    f"manifest format {data.get('format')!r} is not supported "
                    f"(this jsonsnap reads format {FORMAT_VERSION})"
                )
            tables = {n: TableEntry.from_json(n, t) for n, t in data["tables"].items()}
            return cls(
                dialect=data["dialect"],
                schema=data["schema"],
                selection=data.get("selection", {}),
                tables=tables,
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SnapshotCorrupt(f"manifest.json is unreadable: {exc}") from None


def split_rows(data: bytes) -> list[bytes]:
    """A data file's rows as the exact bytes `pretty_row` wrote, without parsing JSON.

    All at once, by one split in C: the fast way when the whole file is wanted.
    """
    rows = split_bare_rows(data)
    return [row + _ROW_END for row in rows[:-1]] + rows[-1:]


def split_bare_rows(data: bytes) -> list[bytes]:
    """`split_rows` without the closing brace of every row but the last; see close_row."""
    if not _has_rows(data):
        return []
    rows = data.split(_BETWEEN_ROWS)  # then trim the brackets: no copy of the whole file
    rows[0] = rows[0][2:]
    rows[-1] = rows[-1][:-3]  # the same row as rows[0] when there is only one
    return rows


def differing_rows(old: bytes, new: bytes) -> list[tuple[bytes, bytes]] | None:
    """The rows, whole, at which two data files differ place by place; None if
    they hold different numbers of rows.

    For the commit summary of a shard that changed in place: a few differing
    rows among thousands. The compiled way finds them without one object per row.
    """
    native = speedups.native
    if native is None or not (_has_rows(old) and _has_rows(new)):
        old_rows, new_rows = split_bare_rows(old), split_bare_rows(new)
        if len(old_rows) != len(new_rows):
            return None
        return [
            (close_row(old_rows, i), close_row(new_rows, i))
            for i, (o, n) in enumerate(zip(old_rows, new_rows, strict=True))
            if o != n
        ]
    pieces = native.differing_rows(old, new, _BETWEEN_ROWS)
    if pieces is None:
        return None
    pairs = [
        (_whole_row(old, o_start, o_end), _whole_row(new, n_start, n_end))
        for o_start, o_end, n_start, n_end in pieces
    ]
    # Pieces that differed only in the brackets trimmed off the first and last
    # rows (never in a file jsonsnap writes) are the same rows.
    return [(o, n) for o, n in pairs if o != n]


def _whole_row(data: bytes, start: int, end: int) -> bytes:
    """A piece of `data` split at _BETWEEN_ROWS, as the row it holds."""
    if end == len(data):  # the last row: without the closing bracket, its brace kept
        return data[max(start, 2) : end - 3]
    return data[max(start, 2) : end] + _ROW_END


def close_row(bare_rows: list[bytes], index: int) -> bytes:
    """Row `index` of `split_bare_rows`, whole."""
    row = bare_rows[index]
    return row if index == len(bare_rows) - 1 else row + _ROW_END


def iter_rows(data: bytes) -> Iterator[bytes]:
    """A data file's rows, one at a time, as the exact bytes `pretty_row` wrote.

    Row objects sit at an indent of two spaces, and JSON strings cannot hold a raw
    newline, so '\\n  },\\n' occurs only between two rows.
    """
    if not _has_rows(data):
        return
    start, end = 2, len(data) - 3
    while (cut := data.find(_BETWEEN_ROWS, start, end)) >= 0:
        yield data[start : cut + len(_ROW_END)]  # the row, with its closing "\n  }"
        start = cut + len(_BETWEEN_ROWS)
    yield data[start:end]


_BETWEEN_ROWS = b"\n  },\n"
_ROW_END = b"\n  }"


def _has_rows(data: bytes) -> bool:
    """Whether a data file holds any row; it must be a jsonsnap row array at all."""
    if data in (b"[]\n", b"[\n]\n"):
        return False
    if not (data.startswith(b"[\n") and data.endswith(b"\n]\n")):
        raise SnapshotCorrupt("a data file is not a jsonsnap row array")
    return True
