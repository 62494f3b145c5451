"""Data files in the staging folder: one per small table, shards for large ones.

Rows arrive in batches of (key, row bytes), already in their final order. Each
file is hashed as it is written, so export never reads a file back to learn
its checksum.
"""

from __future__ import annotations

import hashlib
import heapq
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from backend import layout
from backend.layout import DataFile

#: A batch of rows in order: the keys that order them and decide shard cuts, and
#: the rows' bytes in the file, index for index. A key-less table's key is the row.
Batch = tuple[list[bytes], list[bytes]]

#: Told of each data file as soon as it is complete: where it was staged, and the
#: path of the file that follows it in the table (None for the last).
OnFile = Callable[[DataFile, Path, str | None], None]
#: Whether a complete data file is one the repository already holds, byte for byte.
Held = Callable[[DataFile], bool]

_SORT_CHUNK_BYTES = 32 * 1024 * 1024
#: A data file larger than this is written to disk as it grows, not when it is saved.
_MEMORY_BYTES = 8 * 1024 * 1024
_MERGE_BATCH = 2000


class _StagedFile:
    """A data file being written, hashed as it grows.

    It stays in memory up to _MEMORY_BYTES and is written out only when it is
    saved: a file HEAD already holds, the common case on a quiet night, never
    touches the disk. Creating files is not free, and on some file systems
    (ext4 without a journal) it is slow after many deletions.
    """

    def __init__(self, stage: Path, path: str) -> None:
        self.path = path
        self.local = stage / path.replace("/", "%")
        self.chunks = [b"[\n"]
        self.buffered = 2
        self.handle: IO[bytes] | None = None
        self.sha = hashlib.sha256(b"[\n")
        self.rows = 0

    def add(self, rows: list[bytes]) -> None:
        if not rows:
            return
        data = b",\n".join(rows)
        if self.rows:
            data = b",\n" + data
        self._append(data)
        self.rows += len(rows)

    def _append(self, data: bytes) -> None:
        self.sha.update(data)
        if self.handle is not None:
            self.handle.write(data)
            return
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > _MEMORY_BYTES:
            self.handle = self._spill()

    def _spill(self) -> IO[bytes]:
        handle = self.local.open("wb")
        handle.writelines(self.chunks)
        self.chunks, self.buffered = [], 0
        return handle

    def close(self) -> DataFile:
        self._append(b"\n]\n" if self.rows else b"]\n")
        return DataFile(self.path, self.rows, self.sha.hexdigest())

    def save(self) -> None:
        """Puts the closed file on disk, at `local`."""
        handle = self.handle or self._spill()
        handle.close()

    def discard(self) -> None:
        self.chunks = []
        if self.handle is not None:
            self.handle.close()
            self.local.unlink()


class TableWriter:
    """Writes one table as a single file, or as shards once it grows past the threshold.

    Rows are held in memory only up to the threshold (SHARD_MIN_ROWS rows or
    SHARD_MIN_BYTES bytes); past it, every row goes straight to its shard,
    which is itself bounded in memory (see _StagedFile).
    A file `held` says the repository already holds is neither staged nor told
    to `on_file`: nothing reads it, since its bytes are HEAD's.
    """

    def __init__(
        self, stage: Path, table: str, on_file: OnFile | None = None, held: Held | None = None
    ) -> None:
        self.stage = stage
        self.on_file = on_file
        self.held = held
        self.staged: dict[str, Path] = {}
        self.stem = layout.table_stem(table)
        self.keys: list[bytes] = []
        self.rows: list[bytes] = []
        self.buffered_bytes = 0
        self.shard: _StagedFile | None = None  # the open one, once the table is sharded
        self.closed: list[DataFile] = []

    def add(self, keys: list[bytes], rows: list[bytes]) -> None:
        if self.shard:
            self._add_to_shards(self.shard, keys, rows)
            return
        self.keys.extend(keys)
        self.rows.extend(rows)
        self.buffered_bytes += sum(map(len, rows))
        if len(self.rows) > layout.SHARD_MIN_ROWS or self.buffered_bytes > layout.SHARD_MIN_BYTES:
            keys, rows, self.keys, self.rows = self.keys, self.rows, [], []
            self._add_to_shards(self._open(layout.FIRST_SHARD), keys, rows)

    def _add_to_shards(self, current: _StagedFile, keys: list[bytes], rows: list[bytes]) -> None:
        start = 0
        for cut in layout.cut_positions(keys):
            current.add(rows[start:cut])
            start = cut
            following = self._open(layout.shard_name(keys[cut]))
            if current.rows:
                self._close(current, following.path)
            else:  # the table's first row is itself a cut: no "first" shard
                current.discard()
            current = following
        current.add(rows[start:])
        self.shard = current

    def _open(self, shard: str | None) -> _StagedFile:
        path = (
            layout.single_file(self.stem) if shard is None else layout.shard_file(self.stem, shard)
        )
        return _StagedFile(self.stage, path)

    def _close(self, staged_file: _StagedFile, following: str | None = None) -> None:
        data_file = staged_file.close()
        self.closed.append(data_file)
        if self.held and self.held(data_file):
            staged_file.discard()
            return
        staged_file.save()
        self.staged[data_file.path] = staged_file.local
        if self.on_file:
            self.on_file(data_file, staged_file.local, following)

    def finish(self, staged: dict[str, Path]) -> tuple[list[DataFile], bool]:
        """Close the files and record the staged ones in `staged` (repo path -> local file)."""
        if self.shard:
            self._close(self.shard)
        else:
            single = self._open(None)
            single.add(self.rows)
            self._close(single)
        staged.update(self.staged)
        return self.closed, self.shard is not None


class ExternalSorter:
    """Sorts a key-less table's rows in bounded memory.

    Sorted runs of at most _SORT_CHUNK_BYTES are spilled to files in the staging
    folder and merged, so a table of any size never has to fit in memory.
    """

    def __init__(self, stage: Path) -> None:
        self.stage = stage
        self.runs: list[IO[bytes]] = []
        self.chunk: list[tuple[bytes, bytes]] = []
        self.size = 0

    def add(self, keys: list[bytes], rows: list[bytes]) -> None:
        self.chunk.extend(zip(keys, rows, strict=True))
        self.size += sum(map(len, keys)) + sum(map(len, rows))
        if self.size >= _SORT_CHUNK_BYTES:
            self.runs.append(self._spill())

    def sorted_batches(self) -> Iterator[Batch]:
        try:
            if not self.runs:
                self.chunk.sort()
                yield batch_of(self.chunk)
                return
            self.runs.append(self._spill())
            batch: list[tuple[bytes, bytes]] = []
            for row in heapq.merge(*(_read_run(run) for run in self.runs)):
                batch.append(row)
                if len(batch) >= _MERGE_BATCH:
                    yield batch_of(batch)
                    batch = []
            yield batch_of(batch)
        finally:
            for run in self.runs:
                run.close()

    def _spill(self) -> IO[bytes]:
        self.chunk.sort()
        run = tempfile.TemporaryFile(dir=self.stage)  # noqa: SIM115 - closed by sorted_batches
        for key, row in self.chunk:
            run.write(len(key).to_bytes(4, "big") + key + len(row).to_bytes(4, "big") + row)
        run.seek(0)
        self.chunk, self.size = [], 0
        return run


def batch_of(pairs: list[tuple[bytes, bytes]]) -> Batch:
    """(key, row) pairs as a Batch."""
    return [key for key, _ in pairs], [row for _, row in pairs]


def _read_run(run: IO[bytes]) -> Iterator[tuple[bytes, bytes]]:
    while header := run.read(4):
        key = run.read(int.from_bytes(header, "big"))
        row = run.read(int.from_bytes(run.read(4), "big"))
        yield key, row


def staged_reader(staged: dict[str, Path]) -> Callable[[list[DataFile]], Iterator[bytes]]:
    """Reads data files from where `TableWriter.finish` recorded them."""

    def read(files: list[DataFile]) -> Iterator[bytes]:
        for data_file in files:
            yield staged[data_file.path].read_bytes()

    return read
