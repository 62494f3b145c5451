"""Faults: the database failing or refusing mid-export, kill -9, concurrent runs, the lock,
and the password never reaching the screen or the repository.

Everything is real: SQLite files, the PostgreSQL server, git repositories and jsonsnap
processes. Faults are injected through the progress callback, PostgreSQL's own
pg_terminate_backend and table locks, and SIGKILL; nothing is mocked.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from conftest import PG_SERVER, execute, git, repo_state, work_tree

from backend.cli import main
from backend.db import make_engine
from backend.dialects import for_engine
from backend.errors import DatabaseFailure
from backend.export import export_snapshot
from backend.repo import BlobStore, SnapshotRepo

JSONSNAP = str(Path(sys.executable).with_name("jsonsnap"))
T1 = "2026-01-01T00:00:00Z"
T2 = "2026-01-02T00:00:00Z"
T3 = "2026-01-03T00:00:00Z"
PASSWORD = "s3cr3t-pw"
WAIT = 30.0  # upper bound for every poll loop and subprocess in this file

# ---------------------------------------------------------------- helpers


def fill(url: str, table: str, rows: int, *, pad: int = 0) -> None:
    """A two-column table with `rows` rows, portable between SQLite and PostgreSQL.

    `pad` widens every value by that many characters, to make a table span several
    read batches whatever the batch is (2000 rows, or a COPY chunk of 256 KiB).
    """
    filler = f" || '{'x' * pad}'" if pad else ""
    execute(
        url,
        f"CREATE TABLE {table} (id integer PRIMARY KEY, v varchar({20 + pad}))",
        f"WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < {rows}) "
        f"INSERT INTO {table} SELECT x, 'v' || x{filler} FROM s",
    )


def export(url: str, repo: Path, when: str, **options):
    engine = make_engine(url)
    try:
        return export_snapshot(engine, repo, timestamp=when, **options)
    finally:
        engine.dispose()


def assert_no_leftovers(repo: Path) -> None:
    assert not (repo / ".git" / "jsonsnap-staging").exists()
    assert not (repo / ".git" / "jsonsnap-index").exists()
    assert not (repo / ".git" / "jsonsnap.lock").exists()


def assert_clean(repo: Path) -> None:
    assert git(repo, "status", "--porcelain", "--untracked-files=all", "--ignored") == ""
    assert_no_leftovers(repo)


def db_name(url: str) -> str:
    name = sa.make_url(url).database
    assert name
    return name


def autocommit(url: str) -> sa.Engine:
    return sa.create_engine(url, isolation_level="AUTOCOMMIT")


def wait_for(condition, what: str, proc: subprocess.Popen | None = None):
    """Poll `condition` until it returns something truthy; bounded by WAIT."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"process ended (rc {proc.returncode}) before {what}: {out!r} {err!r}")
        time.sleep(0.005)
    pytest.fail(f"timed out waiting for {what}")


@contextmanager
def export_while_locked(pg_url: str, repo_path: Path, procs, table: str):
    """An export at T2, started while `table` is locked; the lock goes on leaving."""
    locker = sa.create_engine(pg_url)
    try:
        with locker.connect() as holder:
            holder.exec_driver_sql(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            yield start(
                procs, "export", "--db", pg_url, "--repo", str(repo_path), "--timestamp", T2
            )
            holder.rollback()
    finally:
        locker.dispose()


def blocked_backend(admin: sa.Engine) -> int | None:
    """The pid of a backend of this database waiting for a lock, if any."""
    with admin.connect() as conn:
        return conn.exec_driver_sql(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        ).scalar()


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen]]:
    """jsonsnap processes started by a test; none outlives it."""
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=WAIT)


def start(procs: list[subprocess.Popen], *args: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [JSONSNAP, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    procs.append(proc)
    return proc


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=WAIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"jsonsnap did not finish within {WAIT}s: {out!r} {err!r}")
    return proc.returncode, out, err


def cli_process(*args: str) -> tuple[int, str, str]:
    """The real `jsonsnap` binary in a process of its own."""
    done = subprocess.run(
        [JSONSNAP, *args], capture_output=True, text=True, timeout=WAIT, check=False
    )
    return done.returncode, done.stdout, done.stderr


def cli(*args: str) -> tuple[int, str, str]:
    """The CLI in-process (fast); an escaping exception reads as the binary would print it."""
    result = CliRunner().invoke(main, list(args), catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        trace = "".join(traceback.format_exception(result.exception))
        return 1, result.stdout, result.stderr + trace
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def make_role(pg_url: str) -> Iterator:
    """Create login roles in the test database's cluster; dropped afterwards."""
    created: list[str] = []

    def _make(*, password: str | None = None, select_on: tuple[str, ...] = ()) -> str:
        name = f"jsonsnap_role_{uuid.uuid4().hex[:10]}"
        login = f"CREATE ROLE {name} LOGIN" + (f" PASSWORD '{password}'" if password else "")
        execute(PG_SERVER, login)
        created.append(name)
        execute(pg_url, *[f"GRANT SELECT ON {t} TO {name}" for t in select_on])
        return name

    yield _make
    for name in created:
        execute(
            pg_url,
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{name}'",
            f"DROP OWNED BY {name}",
        )
        execute(PG_SERVER, f"DROP ROLE {name}")


# ------------------------------------------------- the database fails mid-export


def test_backend_terminated_mid_export_raises_and_leaves_repo_exactly_as_it_was(pg_url, repo_path):
    fill(pg_url, "a", 3000)
    fill(pg_url, "b", 5000, pad=200)  # about 1 MB: several batches by any reading path
    fill(pg_url, "c", 10)
    first = export(pg_url, repo_path, T1)
    assert first.commit == git(repo_path, "rev-parse", "HEAD").strip()
    assert_clean(repo_path)
    before = repo_state(repo_path)
    execute(pg_url, "INSERT INTO a VALUES (3001, 'new')", "UPDATE b SET v = 'changed' WHERE id = 1")

    admin = autocommit(pg_url)
    calls: list[tuple[str, int, int]] = []
    terminated: list[bool] = []

    def kill_backend_on_second_table(table: str, done: int, total: int) -> None:
        calls.append((table, done, total))
        if table == "b" and not terminated:
            with admin.connect() as conn:
                terminated.extend(
                    conn.exec_driver_sql(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    ).scalars()
                )

    try:
        with pytest.raises(DatabaseFailure) as failure:
            export(pg_url, repo_path, T2, progress=kill_backend_on_second_table)
    finally:
        admin.dispose()

    assert terminated == [True]
    # Killed from b's first progress call, with b only partly read.
    first_b = next(i for i, call in enumerate(calls) if call[0] == "b")
    assert {call[0] for call in calls[:first_b]} == {"a"}
    assert calls[first_b - 1] == ("a", 3001, 3001)
    _, done, total = calls[first_b]
    assert 0 < done < total == 5000
    assert "c" not in {call[0] for call in calls}
    prefix = f"database error (postgresql+psycopg2://postgres@127.0.0.1:5432/{db_name(pg_url)}): "
    message = str(failure.value)
    assert message in {
        prefix + "terminating connection due to administrator command",
        prefix + "server closed the connection unexpectedly",
    }
    assert "\n" not in message
    assert repo_state(repo_path) == before
    assert_clean(repo_path)

    # The repository is still perfectly usable: the next run commits the change.
    again = export(pg_url, repo_path, T3)
    assert again.commit == git(repo_path, "rev-parse", "HEAD").strip()
    assert git(repo_path, "rev-parse", "HEAD~1").strip() == before["head"]
    assert git(repo_path, "log", "-1", "--format=%s") == f"snapshot {T3}: a +1; b ~1\n"
    assert_clean(repo_path)


def test_exception_raised_from_progress_callback_leaves_repo_exactly_as_it_was(db_url, repo_path):
    fill(db_url, "a", 10)
    fill(db_url, "b", 2500)
    export(db_url, repo_path, T1)
    before = repo_state(repo_path)
    execute(db_url, "DELETE FROM a WHERE id = 1", "UPDATE b SET v = 'changed' WHERE id = 2500")

    def boom(table: str, done: int, total: int) -> None:
        if table == "b":
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match=r"^boom$"):
        export(db_url, repo_path, T2, progress=boom)
    assert repo_state(repo_path) == before
    assert_clean(repo_path)


def test_a_full_disk_while_storing_objects_leaves_repo_exactly_as_it_was(
    db_url, repo_path, monkeypatch
):
    # Objects are written beside the read; a failure there fails the export
    # before its commit, and the objects already written are removed.
    fill(db_url, "a", 10)
    fill(db_url, "b", 2500)
    export(db_url, repo_path, T1)
    before = repo_state(repo_path)
    execute(db_url, "DELETE FROM a WHERE id = 1", "UPDATE b SET v = 'changed' WHERE id = 2500")
    fill(db_url, "c", 5)  # a new table: nothing waits on its file but the commit
    write = BlobStore.write

    def full_disk(store: BlobStore, path: str, local: Path) -> None:
        if path.startswith("tables/c"):
            raise OSError(errno.ENOSPC, "No space left on device")
        write(store, path, local)

    monkeypatch.setattr(BlobStore, "write", full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        export(db_url, repo_path, T2)
    assert repo_state(repo_path) == before
    assert_clean(repo_path)


def test_backend_terminated_mid_export_via_cli_exits_1_with_one_line(pg_url, repo_path, procs):
    fill(pg_url, "a", 3000)
    fill(pg_url, "b", 10)
    export(pg_url, repo_path, T1)
    before = repo_state(repo_path)
    execute(pg_url, "UPDATE a SET v = 'changed' WHERE id = 7", "DELETE FROM b WHERE id = 3")

    admin = autocommit(pg_url)
    try:
        # Table b is locked, so the export reads a, then blocks on b: it is caught
        # mid-export, with a's file already staged, and its backend is terminated.
        with export_while_locked(pg_url, repo_path, procs, "b") as proc:
            pid = wait_for(lambda: blocked_backend(admin), "the export to block on table b", proc)
            staging = repo_path / ".git" / "jsonsnap-staging"
            # a is read beside b, so it may still be finishing.
            wait_for(lambda: os.listdir(staging) == ["tables%a.json"], "a to be staged", proc)
            with admin.connect() as conn:
                assert conn.exec_driver_sql(f"SELECT pg_terminate_backend({pid})").scalar() is True
        rc, out, err = finish(proc)
    finally:
        admin.dispose()

    assert rc == 1
    assert out == ""
    assert "Traceback" not in err
    prefix = (
        f"Error: database error (postgresql+psycopg2://postgres@127.0.0.1:5432/{db_name(pg_url)}): "
    )
    assert err in {
        prefix + "terminating connection due to administrator command\n",
        prefix + "server closed the connection unexpectedly\n",
    }
    assert repo_state(repo_path) == before
    assert_clean(repo_path)


@pytest.mark.parametrize(
    "rows_in_a", [5, 40000], ids=["small", "b-fails-while-a-is-read-beside-it"]
)
def test_permission_denied_on_one_table_exits_1_and_leaves_repo_clean(
    pg_url, repo_path, make_role, rows_in_a
):
    # Tables are read side by side: with a large a, b fails while the other
    # reader is in the middle of a, which must stop, and b's error is the one shown.
    fill(pg_url, "a", rows_in_a)
    fill(pg_url, "b", 5)
    export(pg_url, repo_path, T1)
    before = repo_state(repo_path)
    execute(pg_url, f"INSERT INTO a VALUES ({rows_in_a + 1}, 'new')")
    role = make_role(select_on=("a",))
    url = f"postgresql://{role}@127.0.0.1/{db_name(pg_url)}"

    rc, out, err = cli("export", "--db", url, "--repo", str(repo_path), "--timestamp", T2)

    assert (rc, out) == (1, "")
    assert err == (
        f"Error: database error (postgresql+psycopg2://{role}@127.0.0.1/{db_name(pg_url)}): "
        "permission denied for table b\n"
    )
    assert repo_state(repo_path) == before
    assert_clean(repo_path)


def test_unreachable_database_exits_1_with_one_line_and_repo_untouched(pg_url, repo_path):
    fill(pg_url, "a", 5)
    export(pg_url, repo_path, T1)
    before = repo_state(repo_path)
    url = f"postgresql://postgres@127.0.0.1:1/{db_name(pg_url)}"

    rc, out, err = cli_process("export", "--db", url, "--repo", str(repo_path), "--timestamp", T2)

    assert (rc, out) == (1, "")
    assert err == (
        f"Error: database error (postgresql+psycopg2://postgres@127.0.0.1:1/{db_name(pg_url)}): "
        'connection to server at "127.0.0.1", port 1 failed: Connection refused\n'
    )
    assert repo_state(repo_path) == before
    assert_clean(repo_path)


# ------------------------------------------------------------------ kill -9


def kill_export_while_zz_is_locked(pg_url, repo_path, procs, until, what):
    """Start an export at T2 and SIGKILL it once `until()` holds.

    zz, read after big, is locked meanwhile: however fast the export reads big,
    it is still running when the moment comes.
    """
    with export_while_locked(pg_url, repo_path, procs, "zz") as proc:
        wait_for(until, what, proc)
        proc.send_signal(signal.SIGKILL)
        assert finish(proc)[0] == -signal.SIGKILL


def test_export_killed_with_sigkill_mid_export_is_recovered_by_the_next_run(
    pg_url, repo_path, procs
):
    execute(
        pg_url,
        "CREATE TABLE big (id integer PRIMARY KEY, v integer)",
        "INSERT INTO big SELECT g, mod(g, 7) FROM generate_series(1, 1000) g",
        "CREATE TABLE zz (id integer PRIMARY KEY)",
        "INSERT INTO zz VALUES (1)",
    )
    old_head = export(pg_url, repo_path, T1).commit
    execute(
        pg_url,
        "INSERT INTO big SELECT g, mod(g, 7) FROM generate_series(1001, 60000) g",
        "INSERT INTO zz VALUES (2)",
    )
    staging = repo_path / ".git" / "jsonsnap-staging"

    kill_export_while_zz_is_locked(
        pg_url,
        repo_path,
        procs,
        lambda: staging.is_dir() and any(n.startswith("tables%big%") for n in os.listdir(staging)),
        "a shard file in the staging folder",
    )

    assert git(repo_path, "rev-parse", "HEAD").strip() == old_head
    assert staging.is_dir()  # the killed run really was cut short

    rc, out, err = cli("export", "--db", pg_url, "--repo", str(repo_path), "--timestamp", T3)

    head = git(repo_path, "rev-parse", "HEAD").strip()
    assert (rc, err) == (0, "")
    assert out == f"committed {head[:10]} snapshot {T3}: big +59000; zz +1\n"
    assert git(repo_path, "rev-parse", "HEAD~1").strip() == old_head
    assert_clean(repo_path)
    git(repo_path, "fsck", "--strict")

    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        counts = {
            t: conn.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar_one() for t in ("big", "zz")
        }
    engine.dispose()
    assert counts == {"big": 60000, "zz": 2}
    manifest = orjson.loads((repo_path / "manifest.json").read_bytes())
    assert {t: manifest["tables"][t]["rows"] for t in manifest["tables"]} == counts
    shards = manifest["tables"]["big"]["shards"]
    assert sum(shard["rows"] for shard in shards) == counts["big"]
    files = work_tree(repo_path)
    assert sorted(files) == sorted(
        ["README.md", "manifest.json", "tables/zz.json", *(s["file"] for s in shards)]
    )
    for shard in shards:
        assert hashlib.sha256(files[shard["file"]]).hexdigest() == shard["sha256"]
        assert len(orjson.loads(files[shard["file"]])) == shard["rows"]
    ids = [row["id"] for s in shards for row in orjson.loads(files[s["file"]])]
    assert ids == list(range(1, 60001))
    assert orjson.loads(files["tables/zz.json"]) == [{"id": 1}, {"id": 2}]


def test_export_killed_after_releasing_head_files_is_recovered_by_the_next_run(
    pg_url, repo_path, procs
):
    # An edited shard's previous version leaves the work tree while the read
    # goes on; a run killed then leaves it missing, and the next run puts HEAD
    # back before it exports.
    execute(
        pg_url,
        "CREATE TABLE big (id integer PRIMARY KEY, v integer)",
        "INSERT INTO big SELECT g, mod(g, 7) FROM generate_series(1, 60000) g",
        "CREATE TABLE zz (id integer PRIMARY KEY)",
        "INSERT INTO zz VALUES (1)",
    )
    old_head = export(pg_url, repo_path, T1).commit
    before = work_tree(repo_path)
    execute(pg_url, "UPDATE big SET v = v + 1 WHERE id = 1", "INSERT INTO zz VALUES (2)")
    shards = orjson.loads(before["manifest.json"])["tables"]["big"]["shards"]
    edited = repo_path / shards[0]["file"]

    kill_export_while_zz_is_locked(
        pg_url, repo_path, procs, lambda: not edited.exists(), "the old copy released"
    )

    assert git(repo_path, "rev-parse", "HEAD").strip() == old_head
    # The edit undone: the next run writes no new copy, so the old one must come back.
    execute(pg_url, "UPDATE big SET v = v - 1 WHERE id = 1")
    rc, out, err = cli("export", "--db", pg_url, "--repo", str(repo_path), "--timestamp", T3)
    head = git(repo_path, "rev-parse", "HEAD").strip()
    assert (rc, err) == (0, "")
    assert out == f"committed {head[:10]} snapshot {T3}: zz +1\n"
    assert_clean(repo_path)
    git(repo_path, "fsck", "--strict")
    after = work_tree(repo_path)
    assert sorted(after) == sorted(before)
    assert [p for p in before if after[p] != before[p]] == ["manifest.json", "tables/zz.json"]


def test_run_killed_after_head_moved_is_repaired_by_the_next_run(sqlite_url, repo_path):
    fill(sqlite_url, "a", 20)
    fill(sqlite_url, "b", 20)
    first = export(sqlite_url, repo_path, T1).commit
    execute(sqlite_url, "UPDATE a SET v = 'changed' WHERE id = 1", "DELETE FROM b WHERE id = 2")
    second = export(sqlite_url, repo_path, T2).commit
    assert first and second
    expected = work_tree(repo_path)

    # The state of a run killed right after `update-ref`: HEAD is the new commit while
    # the index and work tree still hold the old one; then make the tree worse still.
    git(repo_path, "reset", "-q", "--hard", first)
    git(repo_path, "reset", "-q", "--soft", second)
    (repo_path / "tables" / "a.json").unlink()
    (repo_path / "tables" / "b.json").write_bytes(b"[\n  garbage\n")
    (repo_path / "manifest.json").write_text("{}")
    (repo_path / "tables" / "stray.json").write_text("[]\n")
    (repo_path / "tables" / "zz").mkdir()
    (repo_path / "tables" / "zz" / "extra.json").write_text("[]\n")
    git_dir = repo_path / ".git"
    (git_dir / "jsonsnap-staging").mkdir()
    (git_dir / "jsonsnap-staging" / "tables%a.json").write_text("half a file")
    (git_dir / "jsonsnap-index").write_bytes(b"not an index")
    (git_dir / "jsonsnap.lock").write_text('{"pid": 999999, "host": "gone", "since": "x"}\n')
    assert git(repo_path, "status", "--porcelain") != ""

    rc, out, err = cli("export", "--db", sqlite_url, "--repo", str(repo_path), "--timestamp", T3)

    assert (rc, out, err) == (0, "no changes\n", "")
    assert git(repo_path, "rev-parse", "HEAD").strip() == second
    assert work_tree(repo_path) == expected
    assert_clean(repo_path)
    git(repo_path, "fsck", "--strict")


# --------------------------------------------------------------- concurrency


def test_two_simultaneous_exports_make_exactly_one_commit(pg_url, repo_path, procs):
    fill(pg_url, "items", 50)
    old_head = export(pg_url, repo_path, T1).commit
    execute(pg_url, "INSERT INTO items VALUES (51, 'new')", "UPDATE items SET v = 'x' WHERE id = 5")

    args = ("export", "--db", pg_url, "--repo", str(repo_path), "--timestamp", T2)
    args += ("--lock-timeout", "30")
    first, second = start(procs, *args), start(procs, *args)
    results = sorted([finish(first), finish(second)], key=lambda r: r[1])

    head = git(repo_path, "rev-parse", "HEAD").strip()
    assert results == [
        (0, f"committed {head[:10]} snapshot {T2}: items +1 ~1\n", ""),
        (0, "no changes\n", ""),
    ]
    assert git(repo_path, "rev-list", "--count", f"{old_head}..HEAD") == "1\n"
    assert git(repo_path, "rev-parse", "HEAD~1").strip() == old_head
    assert_clean(repo_path)
    git(repo_path, "fsck", "--strict")


def test_lock_held_by_another_process_times_out_naming_the_holder(sqlite_url, repo_path):
    fill(sqlite_url, "a", 3)
    export(sqlite_url, repo_path, T1)
    execute(sqlite_url, "INSERT INTO a VALUES (4, 'four')")
    before = repo_state(repo_path)

    with SnapshotRepo.open(repo_path).lock(600):
        holder = json.loads((repo_path / ".git" / "jsonsnap.lock").read_text())
        began = time.monotonic()
        rc, out, err = cli_process(
            "export", "--db", sqlite_url, "--repo", str(repo_path), "--lock-timeout", "0.5"
        )
        waited = time.monotonic() - began

    assert holder["pid"] == os.getpid()
    assert holder["host"] == socket.gethostname()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", holder["since"])
    assert (rc, out) == (1, "")
    assert err == (
        f"Error: another jsonsnap run holds the repository lock since {holder['since']} "
        f"(pid {os.getpid()} on {socket.gethostname()}); gave up after 0.5s\n"
    )
    assert 0.5 <= waited < WAIT
    assert not (repo_path / ".git" / "jsonsnap.lock").exists()
    assert repo_state(repo_path) == before

    # Once the lock is released, the same command goes through.
    rc, out, err = cli("export", "--db", sqlite_url, "--repo", str(repo_path), "--timestamp", T2)
    head = git(repo_path, "rev-parse", "HEAD").strip()
    assert (rc, out, err) == (0, f"committed {head[:10]} snapshot {T2}: a +1\n", "")


def test_lock_held_by_a_running_export_names_that_export_pid(pg_url, repo_path, procs):
    fill(pg_url, "a", 3)
    export(pg_url, repo_path, T1)
    execute(pg_url, "INSERT INTO a VALUES (4, 'four')")
    admin = autocommit(pg_url)
    locker = sa.create_engine(pg_url)
    try:
        with locker.connect() as holder:
            holder.exec_driver_sql("LOCK TABLE a IN ACCESS EXCLUSIVE MODE")
            running = start(
                procs, "export", "--db", pg_url, "--repo", str(repo_path), "--timestamp", T2
            )
            wait_for(lambda: blocked_backend(admin), "the export to block on table a", running)
            info = json.loads((repo_path / ".git" / "jsonsnap.lock").read_text())
            rc, out, err = cli(
                "export", "--db", pg_url, "--repo", str(repo_path), "--lock-timeout", "0.5"
            )
            holder.rollback()
            done = finish(running)
    finally:
        admin.dispose()
        locker.dispose()

    assert info["pid"] == running.pid
    assert (rc, out) == (1, "")
    assert err == (
        f"Error: another jsonsnap run holds the repository lock since {info['since']} "
        f"(pid {running.pid} on {socket.gethostname()}); gave up after 0.5s\n"
    )
    head = git(repo_path, "rev-parse", "HEAD").strip()
    assert done == (0, f"committed {head[:10]} snapshot {T2}: a +1\n", "")
    assert_clean(repo_path)


# ------------------------------------------------------ the password never shows


def everything_in(repo: Path) -> bytes:
    """Every byte under the repository, .git included, plus every object decompressed."""
    raw = b"".join(p.read_bytes() for p in sorted(repo.rglob("*")) if p.is_file())
    objects = subprocess.run(
        ["git", "-C", str(repo), "cat-file", "--batch-all-objects", "--batch"],
        capture_output=True,
        check=True,
        timeout=WAIT,
    ).stdout
    return raw + objects


@pytest.fixture
def secret_url(pg_url: str, make_role) -> tuple[str, str]:
    """(role, URL with the password) for a role that may read table a but not table b."""
    fill(pg_url, "a", 5)
    fill(pg_url, "b", 5)
    role = make_role(password=PASSWORD, select_on=("a",))
    return role, f"postgresql://{role}:{PASSWORD}@127.0.0.1/{db_name(pg_url)}"


def test_password_never_shown_on_success(pg_url, secret_url, repo_path):
    _, url = secret_url
    seen = []
    for when in (T1, T2):
        rc, out, err = cli(
            "export", "--db", url, "--repo", str(repo_path), "--table", "a", "--timestamp", when
        )
        assert rc == 0, err
        seen += [out, err]
        execute(pg_url, "UPDATE a SET v = 'changed' WHERE id = 1")
    head, parent = git(repo_path, "rev-parse", "HEAD", "HEAD~1").split()
    assert seen == [
        f"committed {parent[:10]} snapshot {T1}: a +5 (new table)\n",
        "",
        f"committed {head[:10]} snapshot {T2}: a ~1\n",
        "",
    ]
    assert git(repo_path, "rev-list", "--count", "HEAD") == "2\n"
    assert PASSWORD not in "".join(seen)
    assert PASSWORD not in git(repo_path, "log", "--format=%B%n%an%n%ae%n%cn%n%ce")
    assert PASSWORD.encode() not in everything_in(repo_path)


@pytest.mark.parametrize("case", ["unknown table", "unreachable", "permission denied", "malformed"])
def test_password_never_shown_on_failure(pg_url, secret_url, repo_path, case):
    role, url = secret_url
    name = db_name(pg_url)
    rc, _, _ = cli("export", "--db", url, "--repo", str(repo_path), "--table", "a")
    assert rc == 0
    execute(pg_url, "INSERT INTO a VALUES (6, 'six')")
    before = repo_state(repo_path)
    masked = f"postgresql+psycopg2://{role}:***@127.0.0.1"
    args, expected_rc, expected_line = {
        "unknown table": (["--db", url, "--table", "nope"], 2, "Error: unknown table 'nope'"),
        "unreachable": (
            ["--db", url.replace("127.0.0.1/", "127.0.0.1:1/")],
            1,
            f"Error: database error ({masked}:1/{name}): "
            'connection to server at "127.0.0.1", port 1 failed: Connection refused',
        ),
        "permission denied": (
            ["--db", url],
            1,
            f"Error: database error ({masked}/{name}): permission denied for table b",
        ),
        "malformed": (
            ["--db", f"postgresql://u:{PASSWORD}@127.0.0.1:notaport/db"],
            2,
            "Error: invalid database URL 'postgresql://u:***@127.0.0.1:notaport/db'",
        ),
    }[case]

    rc, out, err = cli("export", "--repo", str(repo_path), *args)

    assert PASSWORD not in out + err
    assert "Traceback" not in err
    assert rc == expected_rc
    assert out == ""
    assert err == expected_line + "\n"
    assert repo_state(repo_path) == before
    assert PASSWORD not in git(repo_path, "log", "--format=%B")
    assert PASSWORD.encode() not in everything_in(repo_path)


# ------------------------------------------------------ tables read side by side


def test_side_by_side_readers_see_the_snapshot_of_the_first(pg_url):
    # A sibling opened after a commit by someone else still sees the moment
    # the export's own transaction began, as pg_dump --jobs readers do.
    fill(pg_url, "a", 3)
    engine = make_engine(pg_url)
    dialect = for_engine(engine)
    try:
        with dialect.read_transaction(engine) as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM a").scalar() == 3
            execute(pg_url, "INSERT INTO a VALUES (4, 'late')")
            with dialect.sibling_readers(engine, conn, 1) as siblings:
                assert len(siblings) == 1
                assert siblings[0].exec_driver_sql("SELECT count(*) FROM a").scalar() == 3
                assert siblings[0].exec_driver_sql("SHOW TimeZone").scalar() == "UTC"
    finally:
        engine.dispose()


def test_side_by_side_and_one_by_one_reads_write_the_same_snapshot(pg_url, tmp_path):
    fill(pg_url, "a", 12000)
    fill(pg_url, "b", 300)
    fill(pg_url, "c", 5)
    side_by_side, one_by_one = tmp_path / "side", tmp_path / "one"
    export(pg_url, side_by_side, T1)
    export(pg_url, one_by_one, T1, progress=lambda table, done, total: None)
    assert work_tree(side_by_side) == work_tree(one_by_one)
    assert git(side_by_side, "rev-parse", "HEAD^{tree}") == git(
        one_by_one, "rev-parse", "HEAD^{tree}"
    )
