"""Options and environment in one place, and URL masking.

Every entry point (CLI, cron script, admin API, fallback loader) resolves the
database URL and the repository path through `Settings`, so they can never
disagree about which database or which repository they mean.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import zoneinfo
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from backend.errors import BadInput

DEFAULT_DATABASE_URL = "sqlite:///data/app.db"
DEFAULT_REPO = "snapshots"
DEFAULT_AUTHOR = "jsonsnap <jsonsnap@localhost>"

_AUTHOR_RE = re.compile(r"^\s*(?P<name>[^<>]+?)\s*<(?P<email>[^<>\s]*)>\s*$")


@dataclass(frozen=True)
class Settings:
    """The resolved configuration: explicit values win over the environment."""

    database_url: str
    repo_path: Path

    @classmethod
    def resolve(cls, db: str | None = None, repo: str | os.PathLike[str] | None = None) -> Settings:
        url = db or os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
        path = repo or os.environ.get("JSONSNAP_REPO") or DEFAULT_REPO
        return cls(database_url=url, repo_path=Path(path))


def parse_url(url: str) -> URL:
    """Parse a database URL, turning SQLAlchemy's error into a masked one-liner."""
    try:
        return make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise BadInput(f"invalid database URL {mask_url(url)!r}") from None


def mask_url(url: str | URL) -> str:
    """The URL as it may be shown: the password, if any, replaced by ***."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        # Not parseable: still hide anything that looks like user:password@.
        return re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", url)


def scrub(text: str, url: str | URL | None) -> str:
    """Remove the URL's password from an arbitrary message (driver errors echo input)."""
    if url is None:
        return text
    parsed = url if isinstance(url, URL) else _try_parse(url)
    if parsed is not None and parsed.password:
        text = text.replace(str(parsed.password), "***")
    return text


def _try_parse(url: str) -> URL | None:
    try:
        return make_url(url)
    except (ArgumentError, ValueError):
        return None


def author_identity() -> tuple[str, str]:
    """Name and e-mail for commits, from JSONSNAP_AUTHOR ("Name <email>")."""
    raw = os.environ.get("JSONSNAP_AUTHOR") or DEFAULT_AUTHOR
    match = _AUTHOR_RE.match(raw)
    if not match:
        raise BadInput(f"JSONSNAP_AUTHOR must look like 'Name <email>', not {raw!r}")
    return match["name"], match["email"]


def local_zone() -> dt.tzinfo:
    """The zone for dates without an offset: JSONSNAP_TZ, else the system's."""
    name = os.environ.get("JSONSNAP_TZ")
    if name:
        try:
            return zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise BadInput(f"JSONSNAP_TZ={name!r} is not a known time zone") from None
    zone = dt.datetime.now().astimezone().tzinfo
    assert zone is not None
    return zone


def parse_timestamp(value: str | dt.datetime | None) -> dt.datetime:
    """A snapshot time in UTC, whole seconds (git's precision); now when None."""
    if value is None:
        moment = dt.datetime.now(dt.UTC)
    elif isinstance(value, dt.datetime):
        moment = value
    else:
        try:
            moment = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise BadInput(
                f"invalid timestamp {value!r}: use ISO 8601, e.g. 2026-11-28T02:00:00Z"
            ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=local_zone())
    return moment.astimezone(dt.UTC).replace(microsecond=0)


def format_timestamp(moment: dt.datetime) -> str:
    """UTC, to the second, with a Z: how snapshot times read in messages."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
