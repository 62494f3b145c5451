"""Operations: the crontab line, the off-site copy (remote and export --push), verify's
monitoring exit codes, and the cron wrapper scripts/backup_to_json.sh.

Everything is real: crontab files in tmp_path (JSONSNAP_CRONTAB; the machine's crontab
is never read or written), bare git repositories as remotes, SQLite files and the
PostgreSQL server, and the real shell script run in a throw-away copy of the project.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import execute, git, head, run

import backend

PROJECT = Path(backend.__file__).resolve().parent.parent
SCRIPT = PROJECT / "scripts" / "backup_to_json.sh"
JSONSNAP = Path(sys.executable).with_name("jsonsnap")
MARKER = "# jsonsnap daily export"
PASSWORD = "s3cr3t-pw"
DEAD_URL = f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/jsonsnap_gone"
REFUSED = 'connection to server at "127.0.0.1", port 1 failed: Connection refused'
EDITOR = ["-c", "user.name=Editor", "-c", "user.email=editor@example.org"]
WAIT = 60  # upper bound for every subprocess in this file
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (.*)$")
T1 = "2026-11-20T02:00:00Z"
T2 = "2026-11-21T02:00:00Z"
T3 = "2026-11-22T02:00:00Z"


# ---------------------------------------------------------------- helpers


def demo(url: str, materials: int = 3) -> None:
    result = run("demo", "--db", url, "--materials", str(materials))
    assert result.exit_code == 0, result.output


def bare(path: Path) -> Path:
    subprocess.run(
        ["git", "init", "-q", "--bare", "-b", "main", str(path)],
        check=True,
        capture_output=True,
        timeout=WAIT,
    )
    return path


def export(url: str, repo: Path, *extra: str):
    return run("export", "--db", url, "--repo", str(repo), *extra)


def committed(result) -> str:
    """The short id from `committed <id> snapshot ...`."""
    assert result.exit_code == 0, (result.stdout, result.stderr)
    match = re.match(r"^committed ([0-9a-f]{10}) snapshot ", result.stdout)
    assert match, result.stdout
    return match[1]


def push_warning(result) -> str:
    """Exit 0 with exactly one warning line on stderr that says the commit is kept."""
    assert result.exit_code == 0, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("warning: push to ")
    assert "push" in lines[0]
    assert lines[0].endswith("; the snapshot is kept locally and the next push carries it")
    assert "kept locally" in lines[0]
    return lines[0]


# ---------------------------------------------------------------- schedule

OTHER_LINES = [
    "MAILTO=ops@example.org",
    "15 4 * * 1 /usr/local/bin/rotate-logs --weekly  # not jsonsnap's",
]


def cron_line(minute: int, hour: int) -> str:
    return f"{minute} {hour} * * * {PROJECT}/scripts/backup_to_json.sh {MARKER}"


@pytest.fixture
def crontab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A crontab file with two unrelated lines; the machine's crontab is never used."""
    path = tmp_path / "crontab"
    path.write_text("".join(f"{line}\n" for line in OTHER_LINES))
    monkeypatch.setenv("JSONSNAP_CRONTAB", str(path))
    return path


def test_the_project_is_this_checkout():
    assert Path(__file__).resolve().parent.parent == PROJECT
    assert SCRIPT.is_file()


def test_schedule_install_adds_one_line_and_keeps_the_others(crontab):
    result = run("schedule", "install", "--at", "02:30")
    assert result.exit_code == 0, result.output
    assert result.output == f"installed: {cron_line(30, 2)}\n"
    assert crontab.read_text() == "".join(f"{line}\n" for line in [*OTHER_LINES, cron_line(30, 2)])


def test_schedule_install_twice_leaves_one_line(crontab):
    assert run("schedule", "install", "--at", "02:30").exit_code == 0
    once = crontab.read_bytes()
    result = run("schedule", "install", "--at", "02:30")
    assert result.exit_code == 0
    assert crontab.read_bytes() == once
    assert crontab.read_text().splitlines() == [*OTHER_LINES, cron_line(30, 2)]
    assert crontab.read_text().count(MARKER) == 1


def test_schedule_install_at_another_time_replaces_the_line(crontab):
    assert run("schedule", "install", "--at", "02:30").exit_code == 0
    with crontab.open("a") as f:
        f.write("0 12 * * * /usr/bin/true\n")  # a line the user added after ours
    result = run("schedule", "install", "--at", "03:15")
    assert result.exit_code == 0
    assert result.output == f"installed: {cron_line(15, 3)}\n"
    lines = crontab.read_text().splitlines()
    assert [line for line in lines if MARKER not in line] == [
        *OTHER_LINES,
        "0 12 * * * /usr/bin/true",
    ]
    assert [line for line in lines if MARKER in line] == [cron_line(15, 3)]


def test_schedule_remove_removes_only_our_line(crontab):
    original = crontab.read_bytes()
    assert run("schedule", "install", "--at", "02:30").exit_code == 0
    result = run("schedule", "remove")
    assert (result.exit_code, result.output) == (0, "removed\n")
    assert crontab.read_bytes() == original
    again = run("schedule", "remove")
    assert (again.exit_code, again.output) == (0, "no jsonsnap line was installed\n")
    assert crontab.read_bytes() == original


def test_schedule_print_does_not_touch_the_file(crontab, tmp_path, monkeypatch):
    before = crontab.read_bytes()
    mtime = crontab.stat().st_mtime_ns
    result = run("schedule", "print", "--at", "02:30")
    assert (result.exit_code, result.output) == (0, f"{cron_line(30, 2)}\n")
    default = run("schedule", "print")
    assert (default.exit_code, default.output) == (0, f"{cron_line(0, 2)}\n")
    assert crontab.read_bytes() == before
    assert crontab.stat().st_mtime_ns == mtime
    # Nor does it create one.
    missing = tmp_path / "no-crontab"
    monkeypatch.setenv("JSONSNAP_CRONTAB", str(missing))
    assert run("schedule", "print", "--at", "23:59").output == f"{cron_line(59, 23)}\n"
    assert not missing.exists()


def test_schedule_install_creates_a_missing_crontab_file(tmp_path, monkeypatch):
    path = tmp_path / "cron.d-file"
    monkeypatch.setenv("JSONSNAP_CRONTAB", str(path))
    assert run("schedule", "install", "--at", "0:05").exit_code == 0
    assert path.read_text() == f"{cron_line(5, 0)}\n"


@pytest.mark.parametrize("at", ["25:00", "7", "aa:bb", "24:00", "12:60", "", "2:3", "-1:00"])
def test_schedule_bad_time_exits_2_and_changes_nothing(crontab, at):
    before = crontab.read_bytes()
    for action in ("install", "print"):
        result = run("schedule", action, "--at", at)
        assert result.exit_code == 2, (action, result.output)
        assert result.stdout == ""
        assert result.stderr == f"Error: --at {at!r} is not a time of day HH:MM\n"
    assert crontab.read_bytes() == before


# ---------------------------------------------------------------- remote and push


def test_remote_set_then_export_push_updates_the_bare_repository(sqlite_url, repo_path, tmp_path):
    remote = bare(tmp_path / "remote.git")
    demo(sqlite_url)
    result = run("remote", "set", "--repo", str(repo_path), str(remote))
    assert (result.exit_code, result.output) == (0, f"remote set to {remote}\n")
    assert git(repo_path, "remote", "get-url", "origin").strip() == str(remote)

    first = export(sqlite_url, repo_path, "--push", "--timestamp", T1)
    assert first.stderr == ""
    assert head(repo_path).startswith(committed(first))
    assert head(remote, "main") == head(repo_path)

    execute(sqlite_url, "UPDATE materials SET unit_price = 1.50 WHERE id = 2")
    second = export(sqlite_url, repo_path, "--push", "--timestamp", T2)
    assert second.stderr == ""
    assert head(repo_path).startswith(committed(second))
    assert head(remote, "main") == head(repo_path)
    assert git(remote, "rev-list", "--count", "main").strip() == "2"


def test_remote_set_replaces_the_previous_remote(repo_path, tmp_path):
    assert run("remote", "set", "--repo", str(repo_path), str(tmp_path / "a.git")).exit_code == 0
    result = run("remote", "set", "--repo", str(repo_path), str(tmp_path / "b.git"))
    assert result.exit_code == 0
    assert git(repo_path, "remote").split() == ["origin"]
    assert git(repo_path, "remote", "get-url", "origin").strip() == str(tmp_path / "b.git")


def test_unreachable_remote_warns_keeps_the_commit_and_the_next_push_carries_all(
    sqlite_url, repo_path, tmp_path
):
    remote = tmp_path / "later" / "remote.git"  # does not exist yet
    demo(sqlite_url)
    assert run("remote", "set", "--repo", str(repo_path), str(remote)).exit_code == 0

    first = export(sqlite_url, repo_path, "--push", "--timestamp", T1)
    push_warning(first)
    one = head(repo_path)
    assert one.startswith(committed(first))

    execute(sqlite_url, "DELETE FROM material_tags WHERE material_id = 3")
    second = export(sqlite_url, repo_path, "--push", "--timestamp", T2)
    push_warning(second)
    two = head(repo_path)
    assert two.startswith(committed(second))
    assert head(repo_path, "HEAD~1") == one
    assert not remote.exists()

    remote.parent.mkdir()
    bare(remote)
    third = export(sqlite_url, repo_path, "--push", "--timestamp", T3)
    assert (third.exit_code, third.stdout, third.stderr) == (0, "no changes\n", "")
    assert head(repo_path) == two
    assert head(remote, "main") == two
    assert git(remote, "rev-list", "main").split() == [two, one]


def test_rejected_push_only_warns(sqlite_url, repo_path, tmp_path):
    remote = bare(tmp_path / "remote.git")
    demo(sqlite_url)
    assert run("remote", "set", "--repo", str(repo_path), str(remote)).exit_code == 0
    first = export(sqlite_url, repo_path, "--push", "--timestamp", T1)
    assert first.stderr == ""
    one = head(repo_path)

    # Someone else pushed a commit the snapshot repository does not have.
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(remote), str(clone))
    git(clone, *EDITOR, "commit", "-q", "--allow-empty", "-m", "diverging")
    git(clone, "push", "-q", "origin", "main")
    diverging = head(clone)

    execute(sqlite_url, "UPDATE materials SET label = 'Brique rouge' WHERE id = 1")
    second = export(sqlite_url, repo_path, "--push", "--timestamp", T2)
    push_warning(second)
    assert head(repo_path).startswith(committed(second))
    assert head(repo_path, "HEAD~1") == one
    assert head(remote, "main") == diverging
    assert git(repo_path, "status", "--porcelain") == ""


def test_push_warning_names_the_real_reason_for_a_missing_remote(sqlite_url, repo_path, tmp_path):
    """The warning's reason is git's error, not the last line of its advice."""
    remote = tmp_path / "missing.git"
    demo(sqlite_url)
    assert run("remote", "set", "--repo", str(repo_path), str(remote)).exit_code == 0
    missing = push_warning(export(sqlite_url, repo_path, "--push", "--timestamp", T1))
    assert "does not appear to be a git repository" in missing, missing


def test_push_warning_names_the_real_reason_for_a_rejected_push(sqlite_url, repo_path, tmp_path):
    remote = bare(tmp_path / "remote.git")
    demo(sqlite_url)
    assert run("remote", "set", "--repo", str(repo_path), str(remote)).exit_code == 0
    assert export(sqlite_url, repo_path, "--timestamp", T1).exit_code == 0
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(remote), str(clone))
    git(clone, *EDITOR, "commit", "-q", "--allow-empty", "-m", "diverging")
    git(clone, "push", "-q", "origin", "main")
    rejected = push_warning(export(sqlite_url, repo_path, "--push", "--timestamp", T2))
    assert "rejected" in rejected, rejected


def test_export_push_without_a_remote_exits_2_and_commits_nothing(sqlite_url, repo_path):
    demo(sqlite_url)
    committed(export(sqlite_url, repo_path, "--timestamp", T1))
    before = head(repo_path)
    execute(sqlite_url, "UPDATE materials SET unit_price = 9.99 WHERE id = 1")
    result = export(sqlite_url, repo_path, "--push", "--timestamp", T2)
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == "Error: --push needs a remote: use `jsonsnap remote set URL`\n"
    assert head(repo_path) == before
    assert git(repo_path, "status", "--porcelain") == ""


def test_a_remote_password_is_never_printed(sqlite_url, repo_path):
    url = "https://user:secret@127.0.0.1:1/x.git"
    demo(sqlite_url)
    result = run("remote", "set", "--repo", str(repo_path), url)
    assert (result.exit_code, result.output) == (
        0,
        "remote set to https://user:***@127.0.0.1:1/x.git\n",
    )
    pushed = export(sqlite_url, repo_path, "--push", "--timestamp", T1)
    line = push_warning(pushed)
    assert line.startswith("warning: push to https://user:***@127.0.0.1:1/x.git failed: ")
    assert "secret" not in pushed.stdout + pushed.stderr
    committed(pushed)
    # A second run, with nothing to commit, still only warns, still masked.
    again = export(sqlite_url, repo_path, "--push", "--timestamp", T2)
    assert again.stdout == "no changes\n"
    assert "secret" not in push_warning(again)


# ---------------------------------------------------------------- verify


def verify(*args: str):
    return run("verify", *args)


def test_verify_ok_then_drift(db_url, repo_path):
    demo(db_url)
    short = committed(export(db_url, repo_path, "--timestamp", T1))
    ok = verify("--db", db_url, "--repo", str(repo_path))
    assert (ok.exit_code, ok.output) == (0, f"snapshot {short}: ok\n")

    execute(db_url, "UPDATE materials SET unit_price = 12.34 WHERE id = 2")
    drift = verify("--db", db_url, "--repo", str(repo_path))
    assert (drift.exit_code, drift.output) == (
        3,
        f"snapshot {short}: drift\n  drift: materials ~1\n",
    )

    execute(db_url, "INSERT INTO sections (id, slug, label, position) VALUES (9, 'sol', 'Sol', 90)")
    more = verify("--db", db_url, "--repo", str(repo_path))
    assert (more.exit_code, more.output) == (
        3,
        f"snapshot {short}: drift\n  drift: materials ~1\n  drift: sections +1\n",
    )
    # The next export brings HEAD level with the database again.
    committed(export(db_url, repo_path, "--timestamp", T2))
    again = verify("--db", db_url, "--repo", str(repo_path))
    assert (again.exit_code, again.output) == (0, f"snapshot {head(repo_path)[:10]}: ok\n")


def test_verify_json(sqlite_url, repo_path):
    demo(sqlite_url)
    committed(export(sqlite_url, repo_path, "--timestamp", T1))
    commit = head(repo_path)
    execute(sqlite_url, "UPDATE materials SET quantity = 1 WHERE id = 3")
    result = verify("--db", sqlite_url, "--repo", str(repo_path), "--json")
    assert result.exit_code == 3
    assert json.loads(result.output) == {
        "status": "drift",
        "commit": commit,
        "problems": [],
        "drift": {"materials": {"added": 0, "deleted": 0, "changed": 1, "note": None}},
        "checked_database": True,
    }
    no_db = verify("--no-db", "--repo", str(repo_path), "--json")
    assert no_db.exit_code == 0
    assert json.loads(no_db.output) == {
        "status": "ok",
        "commit": commit,
        "problems": [],
        "drift": {},
        "checked_database": False,
    }


def test_verify_no_db_never_touches_the_database(sqlite_url, repo_path, monkeypatch):
    demo(sqlite_url)
    short = committed(export(sqlite_url, repo_path, "--timestamp", T1))
    monkeypatch.setenv("DATABASE_URL", DEAD_URL)
    monkeypatch.setenv("JSONSNAP_REPO", str(repo_path))
    result = verify("--no-db")
    assert (result.exit_code, result.output) == (0, f"snapshot {short}: ok\n")


def test_verify_unreachable_database_exits_1_with_one_line(sqlite_url, repo_path):
    demo(sqlite_url)
    committed(export(sqlite_url, repo_path, "--timestamp", T1))
    result = verify("--db", DEAD_URL, "--repo", str(repo_path))
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("Error: database error (")
    assert result.stderr.endswith(f"): {REFUSED}\n")
    assert PASSWORD not in result.stderr


def test_verify_committed_file_edited_by_hand_exits_4(db_url, repo_path):
    demo(db_url)
    committed(export(db_url, repo_path, "--timestamp", T1))
    data = repo_path / "tables" / "materials.json"
    text = data.read_text()
    assert '"2153.42"' in text
    data.write_text(text.replace('"2153.42"', '"2153.43"'))
    git(repo_path, *EDITOR, "commit", "-q", "-am", "hand edit, manifest kept")
    edited = head(repo_path)
    problem = (
        f"tables/materials.json in snapshot {edited[:10]} does not match its checksum in "
        "manifest.json: the snapshot was edited or damaged"
    )

    for args in (["--no-db"], ["--db", db_url]):
        result = verify("--repo", str(repo_path), *args)
        assert (result.exit_code, result.output) == (
            4,
            f"snapshot {edited[:10]}: corrupt\n  corrupt: {problem}\n",
        ), args
    report = verify("--repo", str(repo_path), "--no-db", "--json")
    assert report.exit_code == 4
    assert json.loads(report.output) == {
        "status": "corrupt",
        "commit": edited,
        "problems": [problem],
        "drift": {},
        "checked_database": False,
    }


def test_verify_file_not_in_the_manifest_exits_4(sqlite_url, repo_path):
    demo(sqlite_url)
    committed(export(sqlite_url, repo_path, "--timestamp", T1))
    (repo_path / "tables" / "extra.json").write_text("[]\n")
    git(repo_path, "add", "tables/extra.json")
    git(repo_path, *EDITOR, "commit", "-q", "-m", "stray file")
    result = verify("--no-db", "--repo", str(repo_path))
    assert (result.exit_code, result.output) == (
        4,
        f"snapshot {head(repo_path)[:10]}: corrupt\n"
        "  corrupt: tables/extra.json is in the snapshot but not in its manifest\n",
    )


def test_verify_missing_git_object_exits_4(sqlite_url, repo_path):
    """A blob deleted from .git/objects: a monitoring check must say corrupt (4), not crash."""
    demo(sqlite_url)
    short = committed(export(sqlite_url, repo_path, "--timestamp", T1))
    blob = git(repo_path, "rev-parse", "HEAD:tables/materials.json").strip()
    (repo_path / ".git" / "objects" / blob[:2] / blob[2:]).unlink()

    result = subprocess.run(
        [str(JSONSNAP), "verify", "--no-db", "--repo", str(repo_path)],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 4, (result.stdout, result.stderr)
    lines = result.stdout.splitlines()
    assert lines[0] == f"snapshot {short}: corrupt"
    named = [line for line in lines[1:] if blob in line or "tables/materials.json" in line]
    assert named, lines
    assert all(line.startswith("  corrupt: ") for line in lines[1:]), lines


def test_verify_corrupt_object_found_by_fsck_exits_4(sqlite_url, repo_path):
    """The README is not read by any table check: only git fsck can see it is damaged."""
    demo(sqlite_url)
    short = committed(export(sqlite_url, repo_path, "--timestamp", T1))
    blob = git(repo_path, "rev-parse", "HEAD:README.md").strip()
    path = repo_path / ".git" / "objects" / blob[:2] / blob[2:]
    path.chmod(0o644)
    path.write_bytes(b"this is not a zlib stream")
    result = verify("--no-db", "--repo", str(repo_path))
    assert result.exit_code == 4, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"snapshot {short}: corrupt"
    assert len(lines) >= 2
    assert all(line.startswith("  corrupt: git fsck: ") for line in lines[1:]), lines


# ---------------------------------------------------------------- scripts/backup_to_json.sh


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A throw-away project folder: the real script, and .venv/bin/jsonsnap linked to ours."""
    root = tmp_path / "proj"
    (root / "scripts").mkdir(parents=True)
    shutil.copy2(SCRIPT, root / "scripts" / "backup_to_json.sh")
    (root / ".venv" / "bin").mkdir(parents=True)
    (root / ".venv" / "bin" / "jsonsnap").symlink_to(JSONSNAP)
    return root


def backup(project: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(project / "scripts" / "backup_to_json.sh")],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
        cwd="/",  # the script finds its project by itself
    )


def log_lines(project: Path) -> list[str]:
    """The log's messages, after checking every line is timestamped."""
    messages = []
    for line in (project / "logs" / "backup.log").read_text().splitlines():
        match = STAMP.match(line)
        assert match, line
        messages.append(match[1])
    return messages


def test_backup_script_exports_and_logs(project, tmp_path):
    url = f"sqlite:///{tmp_path / 'app.db'}"
    demo(url)
    snapshots = project / "snapshots"
    done = backup(project, DATABASE_URL=url, JSONSNAP_REPO=str(snapshots))
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    commit = head(snapshots)
    messages = log_lines(project)
    assert len(messages) == 3, messages
    assert messages[0] == "export started"
    assert messages[1].startswith(f"committed {commit[:10]} snapshot ")
    assert messages[1].endswith(
        ": material_tags +2 (new table); materials +3 (new table); "
        "sections +8 (new table); suppliers +8 (new table)"
    )
    assert messages[2] == "export finished with exit code 0"

    again = backup(project, DATABASE_URL=url, JSONSNAP_REPO=str(snapshots))
    assert again.returncode == 0
    assert log_lines(project)[3:] == [
        "export started",
        "no changes",
        "export finished with exit code 0",
    ]
    assert head(snapshots) == commit
    # Nothing of the script's went anywhere but the copy of the project.
    assert sorted(p.name for p in project.iterdir()) == [".venv", "logs", "scripts", "snapshots"]


def test_backup_script_uses_the_project_defaults(project):
    """Under cron there is no environment: data/app.db and snapshots/ of the project."""
    demo(f"sqlite:///{project / 'data' / 'app.db'}")
    done = backup(project)
    assert done.returncode == 0, log_lines(project)
    assert git(project / "snapshots", "log", "--format=%s").count("\n") == 1
    assert log_lines(project)[-1] == "export finished with exit code 0"


def test_backup_script_skips_while_another_run_holds_the_lock(project, tmp_path):
    url = f"sqlite:///{tmp_path / 'app.db'}"
    demo(url)
    (project / "logs").mkdir()
    env = {"DATABASE_URL": url, "JSONSNAP_REPO": str(project / "snapshots")}
    with (project / "logs" / "backup.lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        skipped = backup(project, **env)
        assert skipped.returncode == 75
        assert log_lines(project) == ["another backup is still running; this one is skipped"]
        assert not (project / "snapshots").exists()
    # Released: the next run goes ahead.
    done = backup(project, **env)
    assert done.returncode == 0
    assert log_lines(project)[1:] == [
        "export started",
        log_lines(project)[2],
        "export finished with exit code 0",
    ]
    assert log_lines(project)[2].startswith("committed ")


def test_backup_script_failing_export_exits_non_zero_and_logs_the_error(project):
    failed = backup(project, DATABASE_URL=DEAD_URL, JSONSNAP_REPO=str(project / "snapshots"))
    assert failed.returncode == 1
    messages = log_lines(project)
    assert len(messages) == 3, messages
    assert messages[0] == "export started"
    assert messages[1].startswith("Error: database error (")
    assert messages[1].endswith(REFUSED)
    assert messages[2] == "export finished with exit code 1"
    assert PASSWORD not in (project / "logs" / "backup.log").read_text()
    assert not (project / "snapshots").exists()


def test_backup_script_pushes_when_origin_is_set(project, tmp_path):
    url = f"sqlite:///{tmp_path / 'app.db'}"
    demo(url)
    snapshots = project / "snapshots"
    remote = bare(tmp_path / "remote.git")
    assert run("remote", "set", "--repo", str(snapshots), str(remote)).exit_code == 0

    done = backup(project, DATABASE_URL=url, JSONSNAP_REPO=str(snapshots))
    assert done.returncode == 0, log_lines(project)
    assert head(remote, "main") == head(snapshots)
    assert not any("warning" in message for message in log_lines(project))

    execute(url, "UPDATE suppliers SET city = 'Grenoble' WHERE id = 1")
    assert backup(project, DATABASE_URL=url, JSONSNAP_REPO=str(snapshots)).returncode == 0
    assert head(remote, "main") == head(snapshots)
    assert git(remote, "rev-list", "--count", "main").strip() == "2"


def test_backup_script_failed_push_is_logged_and_exits_0(project, tmp_path):
    url = f"sqlite:///{tmp_path / 'app.db'}"
    demo(url)
    snapshots = project / "snapshots"
    remote = tmp_path / "not-yet.git"
    assert run("remote", "set", "--repo", str(snapshots), str(remote)).exit_code == 0
    done = backup(project, DATABASE_URL=url, JSONSNAP_REPO=str(snapshots))
    assert done.returncode == 0
    messages = log_lines(project)
    assert messages[1].startswith("committed ")
    assert messages[2].startswith(f"warning: push to {remote} failed: ")
    assert messages[2].endswith("the snapshot is kept locally and the next push carries it")
    assert messages[3] == "export finished with exit code 0"


def test_backup_script_in_a_cloned_project_before_the_first_snapshot(project, tmp_path):
    """The project is a git clone with an origin, and snapshots/ is a plain folder of it
    (its README.md is committed) until the first export makes it a repository. The
    script must not take the project's origin for the snapshots' remote."""
    upstream = bare(tmp_path / "upstream.git")
    (project / "snapshots").mkdir()
    (project / "snapshots" / "README.md").write_text("The snapshot format.\n")
    git(project, "init", "-q", "-b", "main")
    git(project, "add", "scripts", "snapshots/README.md")
    git(project, *EDITOR, "commit", "-q", "-m", "the project")
    git(project, "remote", "add", "origin", str(upstream))
    demo(f"sqlite:///{project / 'data' / 'app.db'}")

    done = backup(project)  # cron: no DATABASE_URL, no JSONSNAP_REPO
    messages = log_lines(project)
    assert done.returncode == 0, messages
    assert messages[1].startswith("committed "), messages
    assert (project / "snapshots" / ".git").is_dir()
    assert head(project / "snapshots") != head(project)
    assert git(upstream, "for-each-ref") == ""  # nothing was pushed to the project's origin
