from collections.abc import Callable

def cut_positions(keys: list[bytes], multiplier: int, limit: int) -> list[int]: ...
def encode_rows(
    chunk: bytes,
    parts: tuple[bytes, ...],
    kinds: bytes,
    encoders: tuple[Callable[[bytes], bytes] | None, ...],
    memos: tuple[dict[bytes, bytes] | None, ...],
    key_index: tuple[int, ...],
) -> tuple[list[bytes], list[bytes]]: ...
def differing_rows(
    old: bytes, new: bytes, separator: bytes
) -> list[tuple[int, int, int, int]] | None: ...

class CopyFailed(Exception):
    args: tuple[bytes, str | None]

def copy_out(
    pgconn: int, libpq: tuple[int, ...], sql: bytes, limit: int, sink: Callable[[bytes], object]
) -> None: ...
