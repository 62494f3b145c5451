"""The admin and materials API (backend/main.py): routes, the export lock, the fallback
header, bearer-token security and error bodies; and one run of `jsonsnap serve`.

Requests go through Starlette's TestClient to the real app, over real SQLite files,
the real PostgreSQL server and real git repositories; the last test starts the real
uvicorn server on a free 127.0.0.1 port and talks to it with urllib.

Starlette warns that its TestClient will move from httpx to httpx2; that third-party
deprecation is ignored here, and only here (the client is imported inside a fixture so
that the filter below covers the import).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import execute, git, head, run

from backend.repo import SnapshotRepo

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)

TOKEN = "t0ken-9f2c61d0a4b84e1f"
PASSWORD = "s3cr3t-pw"
DEAD_URL = f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/jsonsnap_gone"
JSONSNAP = Path(sys.executable).with_name("jsonsnap")
T1 = "2026-11-20T02:00:00Z"
T2 = "2026-11-21T02:00:00Z"
WAIT = 60  # seconds for uvicorn to start; generous for a loaded CI machine
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ADMIN_ROUTES = [
    ("POST", "/api/admin/export-to-json"),
    ("GET", "/api/admin/snapshots"),
    ("GET", "/api/admin/diff?from=HEAD"),
]


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    result = run("demo", "--db", url, "--materials", "3")
    assert result.exit_code == 0, result.output
    return url


@pytest.fixture
def env(db: str, repo_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {"DATABASE_URL": db, "JSONSNAP_REPO": str(repo_path), "JSONSNAP_ADMIN_TOKEN": TOKEN}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def client(env):
    from fastapi.testclient import TestClient

    from backend.main import app

    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def lenient_client(env):
    """A client that gets the app's 500 response instead of the server-side exception."""
    from fastapi.testclient import TestClient

    from backend.main import app

    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def export(url: str, repo: Path, stamp: str) -> str:
    result = run("export", "--db", url, "--repo", str(repo), "--timestamp", stamp)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("committed "), result.output
    return head(repo)


def cli_json(*args: str):
    result = run(*args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output, parse_float=Decimal)


def body(response):
    return json.loads(response.content, parse_float=Decimal)


def assert_clean_error(response, *secrets: str) -> str:
    """A one-line {"error": ...} body with no traceback and none of the secrets."""
    text = response.text
    assert "Traceback" not in text
    assert 'File "' not in text
    for secret in secrets:
        assert secret not in text
    payload = response.json()
    assert set(payload) == {"error"}, payload
    assert isinstance(payload["error"], str)
    assert "\n" not in payload["error"]
    return payload["error"]


# ---------------------------------------------------------------- export


def test_export_route_commits_then_reports_no_change(client, db, repo_path):
    first = client.post("/api/admin/export-to-json", headers=AUTH)
    assert first.status_code == 200
    assert first.json() == {
        "status": "success",
        "commit": head(repo_path),
        "changed": True,
        "summary": {
            "material_tags": {"added": 2, "deleted": 0, "changed": 0, "note": "new table"},
            "materials": {"added": 3, "deleted": 0, "changed": 0, "note": "new table"},
            "sections": {"added": 8, "deleted": 0, "changed": 0, "note": "new table"},
            "suppliers": {"added": 8, "deleted": 0, "changed": 0, "note": "new table"},
        },
    }
    commit = head(repo_path)

    second = client.post("/api/admin/export-to-json", headers=AUTH)
    assert second.status_code == 200
    assert second.json() == {"status": "success", "commit": None, "changed": False, "summary": {}}
    assert head(repo_path) == commit

    execute(db, "UPDATE materials SET unit_price = 18.90 WHERE id = 2")
    third = client.post("/api/admin/export-to-json", headers=AUTH)
    assert third.json() == {
        "status": "success",
        "commit": head(repo_path),
        "changed": True,
        "summary": {"materials": {"added": 0, "deleted": 0, "changed": 1, "note": None}},
    }
    assert git(repo_path, "rev-parse", "HEAD~1").strip() == commit


def test_export_route_answers_409_while_another_export_holds_the_lock(client, db, repo_path):
    commit = export(db, repo_path, T1)
    execute(db, "UPDATE materials SET unit_price = 1.00 WHERE id = 1")
    started = time.monotonic()
    with SnapshotRepo.open(repo_path).lock(600):
        busy = client.post("/api/admin/export-to-json", headers=AUTH)
    assert time.monotonic() - started < 10  # it does not wait for the lock
    assert busy.status_code == 409
    message = assert_clean_error(busy)
    assert re.fullmatch(
        r"another jsonsnap run holds the repository lock since "
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00 "
        rf"\(pid {os.getpid()} on {re.escape(socket.gethostname())}\); gave up after 0s",
        message,
    ), message
    assert head(repo_path) == commit

    # Released: the same request now goes through.
    done = client.post("/api/admin/export-to-json", headers=AUTH)
    assert done.status_code == 200
    assert done.json()["changed"] is True
    assert done.json()["commit"] == head(repo_path) != commit


# ---------------------------------------------------------------- history


def test_snapshots_route_equals_log_json(client, db, repo_path):
    export(db, repo_path, T1)
    execute(db, "DELETE FROM material_tags")
    export(db, repo_path, T2)
    response = client.get("/api/admin/snapshots", headers=AUTH)
    assert response.status_code == 200
    expected = cli_json("log", "--json", "--repo", str(repo_path))
    assert body(response) == expected
    assert [entry["time"] for entry in expected] == [T2, T1]
    assert expected[0]["commit"] == head(repo_path)


def test_diff_route_between_snapshots_and_against_the_database(client, db, repo_path):
    export(db, repo_path, T1)
    execute(db, "UPDATE materials SET unit_price = 18.90 WHERE id = 1")
    export(db, repo_path, T2)

    response = client.get("/api/admin/diff", params={"from": "HEAD~1", "to": "HEAD"}, headers=AUTH)
    assert response.status_code == 200
    expected = cli_json("diff", "HEAD~1", "HEAD", "--json", "--repo", str(repo_path))
    assert body(response) == expected
    changed = expected["tables"]["materials"]
    assert "2153.42" in json.dumps(changed)
    assert "18.90" in json.dumps(changed)
    # `to` defaults to HEAD.
    default = client.get("/api/admin/diff", params={"from": "HEAD~1"}, headers=AUTH)
    assert body(default) == expected

    execute(db, "INSERT INTO sections (id, slug, label, position) VALUES (9, 'sol', 'Sol', 90)")
    live = client.get("/api/admin/diff", params={"from": "HEAD", "to": "db"}, headers=AUTH)
    assert live.status_code == 200
    expected_live = cli_json("diff", "HEAD", "db", "--json", "--db", db, "--repo", str(repo_path))
    assert body(live) == expected_live
    assert list(expected_live["tables"]) == ["sections"]

    only = client.get(
        "/api/admin/diff",
        params={"from": "HEAD~1", "to": "db", "table": ["sections"]},
        headers=AUTH,
    )
    assert body(only) == cli_json(
        "diff",
        "HEAD~1",
        "db",
        "--table",
        "sections",
        "--json",
        "--db",
        db,
        "--repo",
        str(repo_path),
    )


# ---------------------------------------------------------------- materials


def test_materials_from_the_database_then_from_the_snapshot(client, db, repo_path, monkeypatch):
    up = client.get("/api/materials")  # no token needed: this is the app's read path
    assert up.status_code == 200
    assert up.headers["X-Data-Source"] == "db"
    rows = body(up)
    assert [row["id"] for row in rows] == [1, 2, 3]
    assert rows[0]["unit_price"] == "2153.42"
    assert rows[0]["quantity"] == "4495.304"
    assert rows[0]["vat_rate"] == "20.00"
    assert rows[0]["available_from"] == "2026-01-30"
    assert rows[0]["attributes"] == {
        "finition": "rénovation",
        "couleur": None,
        "poids_kg": Decimal("27.5"),
    }
    commit = export(db, repo_path, T1)

    monkeypatch.setenv("DATABASE_URL", DEAD_URL)
    down = client.get("/api/materials")
    assert down.status_code == 200
    assert down.headers["X-Data-Source"] == f"snapshot {commit[:10]} {T1}"
    assert body(down) == rows


def test_materials_with_both_sources_down_is_a_clean_503(client, tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", DEAD_URL)
    monkeypatch.setenv("JSONSNAP_REPO", str(tmp_path / "nowhere"))
    response = client.get("/api/materials")
    assert response.status_code == 503
    message = assert_clean_error(response, PASSWORD, DEAD_URL)
    assert message.startswith("table 'materials' is unavailable: database: ")
    assert "X-Data-Source" not in response.headers


# ---------------------------------------------------------------- security


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_admin_routes_need_the_token(client, db, repo_path, method, path):
    export(db, repo_path, T1)
    missing = client.request(method, path)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    for header in (
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        "Bearer ",
        f"Basic {TOKEN}",
        TOKEN,
        f"Token {TOKEN}",
        f"Bearer  {TOKEN}",
    ):
        wrong = client.request(method, path, headers={"Authorization": header})
        assert wrong.status_code == 401, header
        assert wrong.content == missing.content, header
        assert wrong.headers["WWW-Authenticate"] == "Bearer"
    ok = client.request(method, path, headers=AUTH)
    assert ok.status_code == 200, ok.text


def test_the_bearer_scheme_is_case_insensitive(client, db, repo_path):
    export(db, repo_path, T1)
    response = client.get("/api/admin/snapshots", headers={"Authorization": f"bearer {TOKEN}"})
    assert response.status_code == 200


def test_a_rejected_token_changes_nothing(client, db, repo_path):
    response = client.post("/api/admin/export-to-json", headers={"Authorization": "Bearer no"})
    assert response.status_code == 401
    assert not repo_path.exists()


@pytest.mark.parametrize("configured", [None, ""])
@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_admin_routes_are_off_without_a_configured_token(
    client, repo_path, monkeypatch, configured, method, path
):
    if configured is None:
        monkeypatch.delenv("JSONSNAP_ADMIN_TOKEN")
    else:
        monkeypatch.setenv("JSONSNAP_ADMIN_TOKEN", configured)
    for headers in ({}, {"Authorization": "Bearer "}, AUTH, {"Authorization": "Bearer x"}):
        response = client.request(method, path, headers=headers)
        assert response.status_code == 503, headers
    assert not repo_path.exists()
    # The materials route is not an admin route: it still answers.
    assert client.get("/api/materials").status_code == 200


@pytest.mark.parametrize(
    ("case", "status", "message"),
    [
        ("no token", 401, "unauthorized"),
        ("wrong token", 401, "unauthorized"),
        ("admin off", 503, "admin routes are disabled: set JSONSNAP_ADMIN_TOKEN"),
    ],
)
def test_auth_errors_have_the_documented_error_body(client, monkeypatch, case, status, message):
    """README: error responses are {"error": "one line"}, for every route and status."""
    headers = {"Authorization": "Bearer wrong"} if case == "wrong token" else {}
    if case == "admin off":
        monkeypatch.delenv("JSONSNAP_ADMIN_TOKEN")
    response = client.get("/api/admin/snapshots", headers=headers)
    assert response.status_code == status
    assert response.json() == {"error": message}


# ---------------------------------------------------------------- errors


def test_unknown_revision_is_a_400(client, db, repo_path):
    export(db, repo_path, T1)
    response = client.get("/api/admin/diff", params={"from": "nope"}, headers=AUTH)
    assert response.status_code == 400
    assert response.json() == {
        "error": "no snapshot named 'nope': give a date (YYYY-MM-DD), an ISO 8601 time, or a commit"
    }


def test_a_revision_cannot_smuggle_a_git_option(client, db, repo_path, tmp_path):
    export(db, repo_path, T1)
    target = tmp_path / "written-by-git"
    for spec in (f"--output={target}", "--all", "-h"):
        response = client.get("/api/admin/diff", params={"from": spec}, headers=AUTH)
        assert response.status_code == 400, spec
        assert_clean_error(response)
    assert not target.exists()


def test_a_failing_database_url_with_a_password_never_leaks(client, db, repo_path, monkeypatch):
    export(db, repo_path, T1)
    monkeypatch.setenv("DATABASE_URL", DEAD_URL)
    full = DEAD_URL.replace("postgresql://", "postgresql+psycopg2://")
    exported = client.post("/api/admin/export-to-json", headers=AUTH)
    assert exported.status_code == 503
    message = assert_clean_error(exported, PASSWORD, DEAD_URL, full)
    assert message.endswith(
        'connection to server at "127.0.0.1", port 1 failed: Connection refused'
    )

    diffed = client.get("/api/admin/diff", params={"from": "HEAD", "to": "db"}, headers=AUTH)
    assert diffed.status_code == 503
    assert_clean_error(diffed, PASSWORD, DEAD_URL, full)


def test_a_damaged_object_store_is_a_clean_500(lenient_client, db, repo_path):
    """A blob missing from .git/objects: a 500 with one line, not the exception's text."""
    export(db, repo_path, T1)
    execute(db, "UPDATE materials SET unit_price = 1.00 WHERE id = 1")
    export(db, repo_path, T2)
    blob = git(repo_path, "rev-parse", "HEAD~1:tables/materials.json").strip()
    (repo_path / ".git" / "objects" / blob[:2] / blob[2:]).unlink()
    response = lenient_client.get(
        "/api/admin/diff", params={"from": "HEAD~1", "to": "HEAD"}, headers=AUTH
    )
    assert response.status_code == 500
    assert_clean_error(response, str(repo_path), "could not be resolved", "ValueError")


# ---------------------------------------------------------------- the real server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fetch(url: str, headers: dict[str, str] | None = None):
    """(status, headers, body) over plain HTTP to 127.0.0.1, with no proxy in the way."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with opener.open(request, timeout=5) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers, error.read()


def test_jsonsnap_serve_answers_on_a_real_socket(env, db, repo_path, tmp_path):
    commit = export(db, repo_path, T1)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with (tmp_path / "serve.log").open("w") as log:
        proc = subprocess.Popen(
            [str(JSONSNAP), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + WAIT
            while True:
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()
                try:
                    status, headers, content = fetch(f"{base}/api/materials")
                    break
                except OSError:
                    assert time.monotonic() < deadline, "the server did not answer in time"
                    time.sleep(0.1)
            assert status == 200
            assert headers["X-Data-Source"] == "db"
            rows = json.loads(content)
            assert [row["unit_price"] for row in rows][:1] == ["2153.42"]
            assert len(rows) == 3

            status, _, content = fetch(f"{base}/api/admin/snapshots", AUTH)
            assert status == 200
            assert json.loads(content) == cli_json("log", "--json", "--repo", str(repo_path))
            assert json.loads(content)[0]["commit"] == commit

            status, headers, _ = fetch(f"{base}/api/admin/snapshots")
            assert status == 401
            assert headers["WWW-Authenticate"] == "Bearer"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=WAIT)
