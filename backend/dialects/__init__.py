"""What differs between databases, in one class per dialect, chosen by `dialect.name`.

Export and restore never test the dialect themselves: they ask the object
returned by `for_engine` for a consistent read transaction, the expression that
reads a column without loss, the ordering of keys, and the database's own name
for each column type.
"""

from __future__ import annotations

from sqlalchemy import Engine

from backend.dialects.base import Dialect
from backend.dialects.postgresql import PostgresDialect
from backend.dialects.sqlite import SqliteDialect
from backend.errors import BadInput

_DIALECTS: dict[str, type[Dialect]] = {"postgresql": PostgresDialect, "sqlite": SqliteDialect}


def for_engine(engine: Engine) -> Dialect:
    try:
        return _DIALECTS[engine.dialect.name]()
    except KeyError:
        supported = ", ".join(sorted(_DIALECTS))
        raise BadInput(
            f"database {engine.dialect.name!r} is not supported (supported: {supported})"
        ) from None


__all__ = ["Dialect", "for_engine"]
