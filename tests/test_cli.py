"""The command line: exit codes, one-line messages, options versus environment, progress bars.

BadInput is a usage error (exit 2) and every other failure exit 1; neither prints a
traceback. Progress bars go to stderr only when it is a terminal: checked both with
pipes and under a real pseudo-terminal.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import execute, git, head, run

from backend.cli import main

JSONSNAP = str(Path(sys.executable).with_name("jsonsnap"))
T1 = "2026-01-01T00:00:00Z"
T2 = "2026-01-02T00:00:00Z"
WAIT = 30.0


def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """The CLI in-process; an escaping exception reads as the binary would print it."""
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        trace = "".join(traceback.format_exception(result.exception))
        return 1, result.stdout, result.stderr + trace
    return result.exit_code, result.stdout, result.stderr


def cli_process(*args: str) -> tuple[int, str, str]:
    """The installed `jsonsnap` binary, with pipes for stdout and stderr."""
    done = subprocess.run(
        [JSONSNAP, *args], capture_output=True, text=True, timeout=WAIT, check=False
    )
    return done.returncode, done.stdout, done.stderr


def assert_usage_error(outcome: tuple[int, str, str], message: str) -> None:
    """Exit 2, nothing on stdout, and exactly one line on stderr."""
    rc, out, err = outcome
    assert "Traceback" not in err
    assert (rc, out, err) == (2, "", f"Error: {message}\n")


def two_tables(url: str) -> None:
    execute(
        url,
        "CREATE TABLE a (id integer PRIMARY KEY, v text)",
        "INSERT INTO a VALUES (1, 'one'), (2, 'two'), (3, 'three')",
        "CREATE TABLE b (id integer PRIMARY KEY, w text)",
        "INSERT INTO b VALUES (1, 'x'), (2, 'y')",
    )


# ------------------------------------------------------------------- help


def test_help_lists_init_export_and_demo():
    rc, out, err = cli_process("--help")
    assert (rc, err) == (0, "")
    commands = out.split("Commands:\n", 1)[1].splitlines()
    names = [line.split()[0] for line in commands if line.startswith("  ")]
    assert {"demo", "export", "init"} <= set(names)
    assert names == sorted(names)


# --------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "invalid database URL 'not a url'"),
        ("sqlite", "invalid database URL 'sqlite'"),
        ("://nothing", "invalid database URL '://nothing'"),
        (
            "postgresql://u:s3cr3t-pw@127.0.0.1:notaport/db",
            "invalid database URL 'postgresql://u:***@127.0.0.1:notaport/db'",
        ),
    ],
)
def test_malformed_database_url_exits_2(url, message, repo_path):
    assert_usage_error(cli("export", "--db", url, "--repo", str(repo_path)), message)
    assert not repo_path.exists()


def test_malformed_port_exits_2_from_the_real_binary(repo_path):
    outcome = cli_process(
        "export", "--db", "postgresql://u:pw@127.0.0.1:notaport/db", "--repo", str(repo_path)
    )
    assert_usage_error(outcome, "invalid database URL 'postgresql://u:***@127.0.0.1:notaport/db'")
    assert not repo_path.exists()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "mysql://u:pw@localhost/db",
            "cannot use database URL mysql://u:***@localhost/db: No module named 'MySQLdb'",
        ),
        (
            "sqlite+aiosqlite:///x.db",
            "cannot use database URL sqlite+aiosqlite:///x.db: No module named 'aiosqlite'",
        ),
        (
            "sqlite+pysqlcipher:///x.db",
            "cannot use database URL sqlite+pysqlcipher:///x.db: No module named 'pysqlcipher3'",
        ),
        (
            "nosuch://host/db",
            "cannot use database URL nosuch://host/db: "
            "Can't load plugin: sqlalchemy.dialects:nosuch",
        ),
    ],
)
def test_unsupported_database_exits_2_with_one_line(url, message, repo_path):
    assert_usage_error(cli("export", "--db", url, "--repo", str(repo_path)), message)
    assert not repo_path.exists()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("yesterday", "invalid timestamp 'yesterday': use ISO 8601, e.g. 2026-11-28T02:00:00Z"),
        (
            "2026-02-30T00:00:00Z",
            "invalid timestamp '2026-02-30T00:00:00Z': use ISO 8601, e.g. 2026-11-28T02:00:00Z",
        ),
    ],
)
def test_bad_timestamp_exits_2_and_creates_nothing(value, message, sqlite_url, repo_path):
    two_tables(sqlite_url)
    outcome = cli("export", "--db", sqlite_url, "--repo", str(repo_path), "--timestamp", value)
    assert_usage_error(outcome, message)
    assert not repo_path.exists()


def test_timestamp_before_the_last_snapshot_exits_2_and_keeps_head(sqlite_url, repo_path):
    two_tables(sqlite_url)
    assert cli("export", "--db", sqlite_url, "--repo", str(repo_path), "--timestamp", T2)[0] == 0
    before = head(repo_path)
    execute(sqlite_url, "INSERT INTO a VALUES (4, 'four')")
    outcome = cli("export", "--db", sqlite_url, "--repo", str(repo_path), "--timestamp", T1)
    assert_usage_error(
        outcome,
        f"snapshot time {T1} is before the last snapshot ({T2}); snapshots must stay in time order",
    )
    assert head(repo_path) == before
    assert git(repo_path, "status", "--porcelain", "--untracked-files=all") == ""


def test_timestamp_with_offset_or_zone_is_committed_in_utc(sqlite_url, repo_path):
    two_tables(sqlite_url)
    rc, out, _ = cli(
        "export",
        "--db",
        sqlite_url,
        "--repo",
        str(repo_path),
        "--timestamp",
        "2026-03-01T03:00+02:00",
    )
    assert rc == 0
    assert out.startswith(f"committed {head(repo_path)[:10]} snapshot 2026-03-01T01:00:00Z: ")
    execute(sqlite_url, "INSERT INTO a VALUES (4, 'four')")
    rc, out, _ = cli(
        "export",
        "--db",
        sqlite_url,
        "--repo",
        str(repo_path),
        "--timestamp",
        "2026-07-01 12:00:00",
        env={"JSONSNAP_TZ": "Europe/Paris"},
    )
    assert (rc, out) == (
        0,
        f"committed {head(repo_path)[:10]} snapshot 2026-07-01T10:00:00Z: a +1\n",
    )
    assert git(repo_path, "log", "--format=%cI %s") == (
        "2026-07-01T10:00:00+00:00 snapshot 2026-07-01T10:00:00Z: a +1\n"
        "2026-03-01T01:00:00+00:00 snapshot 2026-03-01T01:00:00Z: a +3 (new table); "
        "b +2 (new table)\n"
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--table", "nope"), "unknown table 'nope'"),
        (("--table", "a", "--table", "nope"), "unknown table 'nope'"),
        (("--exclude-table", "nope"), "unknown table 'nope'"),
        (
            ("--exclude-column", "nope.v"),
            "--exclude-column 'nope.v' names no TABLE.COLUMN of this database",
        ),
    ],
)
def test_unknown_table_exits_2_and_commits_nothing(options, message, db_url, repo_path):
    two_tables(db_url)
    outcome = cli("export", "--db", db_url, "--repo", str(repo_path), *options)
    assert_usage_error(outcome, message)
    assert git(repo_path, "rev-list", "--all") == ""
    assert git(repo_path, "status", "--porcelain", "--untracked-files=all") == ""


@pytest.mark.parametrize("author", ["nobody", "Name <a@b> trailing", "<x@y>", "Two <a@b> <c@d>"])
def test_malformed_author_exits_2_and_creates_nothing(author, sqlite_url, repo_path):
    two_tables(sqlite_url)
    outcome = cli(
        "export", "--db", sqlite_url, "--repo", str(repo_path), env={"JSONSNAP_AUTHOR": author}
    )
    assert_usage_error(outcome, f"JSONSNAP_AUTHOR must look like 'Name <email>', not {author!r}")
    assert not repo_path.exists()


def test_author_from_environment_and_default_author(sqlite_url, repo_path):
    two_tables(sqlite_url)
    assert cli("export", "--db", sqlite_url, "--repo", str(repo_path), "--timestamp", T1)[0] == 0
    execute(sqlite_url, "DELETE FROM b WHERE id = 2")
    rc, _, _ = cli(
        "export",
        "--db",
        sqlite_url,
        "--repo",
        str(repo_path),
        "--timestamp",
        T2,
        env={"JSONSNAP_AUTHOR": "  Ada Lovelace <ada@example.org> "},
    )
    assert rc == 0
    assert git(repo_path, "log", "--format=%an <%ae>|%cn <%ce>") == (
        "Ada Lovelace <ada@example.org>|Ada Lovelace <ada@example.org>\n"
        "jsonsnap <jsonsnap@localhost>|jsonsnap <jsonsnap@localhost>\n"
    )


# ------------------------------------------------------ options and environment


def test_defaults_are_data_app_db_and_snapshots_in_the_working_directory(tmp_path):
    assert Path.cwd() == tmp_path
    assert run("demo", "--materials", "5").output == "demo data written: 5 materials\n"
    assert (tmp_path / "data" / "app.db").is_file()
    assert run("init").output == "snapshot repository created at snapshots\n"
    assert run("init").output == "snapshot repository already exists at snapshots\n"
    rc, out, err = cli("export", "--timestamp", T1)
    repo = tmp_path / "snapshots"
    assert (rc, err) == (0, "")
    assert out == (
        f"committed {head(repo)[:10]} snapshot {T1}: material_tags +5 (new table); "
        "materials +5 (new table); sections +8 (new table); suppliers +8 (new table)\n"
    )
    assert git(repo, "ls-files") == (
        "README.md\nmanifest.json\ntables/material_tags.json\ntables/materials.json\n"
        "tables/sections.json\ntables/suppliers.json\n"
    )
    assert sorted(os.listdir(tmp_path)) == ["data", "home", "snapshots"]


def test_environment_variables_are_used_when_options_are_absent(tmp_path):
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'env' / 'env.db'}",
        "JSONSNAP_REPO": str(tmp_path / "env-repo"),
    }
    assert cli("demo", "--materials", "3", env=env)[:2] == (0, "demo data written: 3 materials\n")
    assert cli("init", env=env)[1] == f"snapshot repository created at {tmp_path / 'env-repo'}\n"
    rc, out, err = cli("export", "--timestamp", T1, env=env)
    assert (rc, err) == (0, "")
    repo = tmp_path / "env-repo"
    assert out.startswith(f"committed {head(repo)[:10]} snapshot {T1}: ")
    assert "materials +3 (new table)" in out
    assert not (tmp_path / "data").exists()
    assert not (tmp_path / "snapshots").exists()


def test_options_win_over_environment_variables(tmp_path, sqlite_url, repo_path):
    two_tables(sqlite_url)
    env = {
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/nothing",
        "JSONSNAP_REPO": str(tmp_path / "not-this-one"),
    }
    rc, out, err = cli(
        "export", "--db", sqlite_url, "--repo", str(repo_path), "--timestamp", T1, env=env
    )
    assert (rc, err) == (0, "")
    assert out == (
        f"committed {head(repo_path)[:10]} snapshot {T1}: a +3 (new table); b +2 (new table)\n"
    )
    assert not (tmp_path / "not-this-one").exists()


def test_database_url_from_environment_reaches_the_server(tmp_path):
    env = {"DATABASE_URL": "postgresql://nobody:pw@127.0.0.1:1/nothing"}
    rc, out, err = cli("export", "--repo", str(tmp_path / "r"), env=env)
    assert (rc, out) == (1, "")
    assert err == (
        "Error: database error (postgresql+psycopg2://nobody:***@127.0.0.1:1/nothing): "
        'connection to server at "127.0.0.1", port 1 failed: Connection refused\n'
    )


# ------------------------------------------------------------- quiet and bars


def test_without_a_terminal_only_the_result_line_is_printed(sqlite_url, repo_path):
    two_tables(sqlite_url)
    rc, out, err = cli("export", "--db", sqlite_url, "--repo", str(repo_path), "--timestamp", T1)
    assert (rc, err) == (0, "")
    assert out == (
        f"committed {head(repo_path)[:10]} snapshot {T1}: a +3 (new table); b +2 (new table)\n"
    )
    rc, out, err = cli_process("export", "--db", sqlite_url, "--repo", str(repo_path))
    assert (rc, out, err) == (0, "no changes\n", "")


def test_quiet_prints_nothing_on_success(sqlite_url, repo_path):
    two_tables(sqlite_url)
    outcome = cli(
        "export", "--db", sqlite_url, "--repo", str(repo_path), "--timestamp", T1, "--quiet"
    )
    assert outcome == (0, "", "")
    assert git(repo_path, "log", "--format=%s") == (
        f"snapshot {T1}: a +3 (new table); b +2 (new table)\n"
    )
    first = head(repo_path)
    assert cli("export", "--db", sqlite_url, "--repo", str(repo_path), "-q") == (0, "", "")
    assert head(repo_path) == first
    execute(sqlite_url, "UPDATE a SET v = 'uno' WHERE id = 1")
    outcome = cli("export", "--db", sqlite_url, "--repo", str(repo_path), "-q", "--timestamp", T2)
    assert outcome == (0, "", "")
    assert git(repo_path, "log", "-1", "--format=%s") == f"snapshot {T2}: a ~1\n"


def on_terminal(*args: str) -> tuple[int, str]:
    """Run jsonsnap with stdin, stdout and stderr on a pseudo-terminal; all it wrote."""
    import pty  # POSIX only, like the rest of jsonsnap's locking

    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([JSONSNAP, *args], stdin=slave, stdout=slave, stderr=slave)
    finally:
        os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + WAIT
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        rc = proc.wait(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=WAIT)
        os.close(master)
    return rc, b"".join(chunks).decode()


def test_progress_bars_appear_on_a_terminal(tmp_path, repo_path):
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    assert run("demo", "--db", url, "--materials", "5").exit_code == 0

    rc, screen = on_terminal("export", "--db", url, "--repo", str(repo_path), "--timestamp", T1)

    assert rc == 0, screen
    # Bars are redrawn in place with \r and hide the cursor with escape sequences.
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)
    frames = [frame.strip() for frame in re.split(r"[\r\n]+", text) if frame.strip()]
    tables = ["material_tags", "materials", "sections", "suppliers"]
    bar = "#" * 36
    assert [f for f in frames if f.endswith("100%")] == [f"{t}  [{bar}]  100%" for t in tables]
    assert frames[-1] == (
        f"committed {head(repo_path)[:10]} snapshot {T1}: material_tags +5 (new table); "
        "materials +5 (new table); sections +8 (new table); suppliers +8 (new table)"
    )
    assert set(frames[:-1]) <= {f"{t}  [{'-' * 36}]    0%" for t in tables} | {
        f"{t}  [{bar}]  100%" for t in tables
    }


def test_quiet_on_a_terminal_prints_nothing(sqlite_url, repo_path):
    two_tables(sqlite_url)
    rc, screen = on_terminal(
        "export", "--db", sqlite_url, "--repo", str(repo_path), "--timestamp", T1, "--quiet"
    )
    assert (rc, screen) == (0, "")
    assert git(repo_path, "log", "--format=%s") == (
        f"snapshot {T1}: a +3 (new table); b +2 (new table)\n"
    )
