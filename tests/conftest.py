"""Shared fixtures: real SQLite files, real PostgreSQL databases, real git repositories.

PostgreSQL tests use the server at TEST_POSTGRES_URL (default: the local one on
127.0.0.1:5432). Each test gets a database of its own, dropped afterwards. When
the server is unreachable they skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from backend import speedups
from backend.cli import main
from backend.dialects import postgresql

PG_SERVER = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No user configuration leaks in: no git config, no jsonsnap variables, a fixed zone."""
    for name in list(os.environ):
        if name.startswith(("JSONSNAP_", "GIT_")) or name == "DATABASE_URL":
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / "no-gitconfig"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'app.db'}"


def _admin_engine() -> sa.Engine:
    return sa.create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")


def _server_reachable() -> str | None:
    try:
        with _admin_engine().connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sa.exc.OperationalError as exc:
        return str(exc.orig).strip().splitlines()[0]
    return None


@pytest.fixture(scope="session")
def pg_server() -> str:
    problem = _server_reachable()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required under CI=true: {problem}")
        pytest.skip(f"PostgreSQL unreachable: {problem}")
    return PG_SERVER


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped after the test."""
    with pg_database(pg_server) as url:
        yield url


@contextmanager
def pg_database(pg_server: str, options: str = "") -> Iterator[str]:
    """A PostgreSQL database of its own, made with CREATE DATABASE `options`."""
    name = f"jsonsnap_test_{uuid.uuid4().hex[:12]}"
    admin = _admin_engine()
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}" {options}')
    try:
        yield sa.make_url(pg_server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """The same test on the embedded default and on the real target."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture(params=["compiled", "pure"])
def read_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The same test with the C extension and without it, as an install with no
    compiler runs. Under CI=true the extension must have been built, or the
    compiled paths would go untested."""
    if request.param == "pure":
        monkeypatch.setattr(speedups, "native", None)
        return "pure"
    require_compiled()
    # Compiled, no PostgreSQL table may take a pure-Python encoder.
    monkeypatch.setattr(postgresql._ServerRows, "plan", _refused)
    monkeypatch.setattr(postgresql._RowEncoder, "__init__", _refused)
    # ... nor be read row by row through psycopg2's copy_expert.
    assert postgresql._libpq() is not None, "libpq's functions were not found through psycopg2"
    monkeypatch.setattr(postgresql._CopySink, "__init__", _refused)
    return "compiled"


def _refused(*args: object) -> None:
    pytest.fail("a pure-Python COPY path was used although the C extension is built")


def require_compiled() -> None:
    """Skips a test of the C extension where it was not built; fails under CI=true."""
    if speedups.native is None:
        if os.environ.get("CI") == "true":
            pytest.fail("the C extension backend._speedups was not built")
        pytest.skip("the C extension backend._speedups was not built")


@pytest.fixture
def repo_path(tmp_path: Path) -> Path:
    return tmp_path / "snapshots"


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run the jsonsnap CLI in-process, as a user would type it."""
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout


def head(repo: Path, rev: str = "HEAD") -> str:
    return git(repo, "rev-parse", rev).strip()


def engine_for(url: str) -> sa.Engine:
    """An engine for a test URL: plain postgresql:// URLs go through psycopg2."""
    return sa.create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1))


def loose_object(repo: Path, rev: str) -> Path:
    """The loose object file of the blob at `rev` (such as HEAD:path)."""
    sha = git(repo, "rev-parse", rev).strip()
    path = repo / ".git" / "objects" / sha[:2] / sha[2:]
    assert path.is_file()
    return path


def execute(url: str, *statements: str) -> None:
    engine = engine_for(url)
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
    engine.dispose()


def work_tree(repo: Path) -> dict[str, bytes]:
    return {
        p.relative_to(repo).as_posix(): p.read_bytes()
        for p in sorted(repo.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(repo).parts
    }


def repo_state(repo: Path) -> dict[str, object]:
    """Everything a failed or refused run must leave exactly as it was."""
    return {
        "head": git(repo, "rev-parse", "HEAD").strip(),
        "refs": git(repo, "for-each-ref"),
        "status": git(repo, "status", "--porcelain", "--untracked-files=all", "--ignored"),
        "files": work_tree(repo),
        "objects": git(repo, "cat-file", "--batch-all-objects", "--batch-check"),
        "git_dir": sorted(os.listdir(repo / ".git")),
    }
