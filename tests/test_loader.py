"""The fallback loader: the database first, the snapshot at git HEAD when the database fails.

Every outage is real: a PostgreSQL database dropped with FORCE, a port nothing listens
on, a role whose CONNECT privilege is revoked, a SQLite file deleted or replaced by a
directory. The snapshot rows are compared, value by value and type by type, with what
the database path returned while it was up.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import shutil
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import PG_SERVER, execute, head, loose_object, run

from backend.loader import DataUnavailable, FallbackLoader, load_materials_data, load_table

PASSWORD = "s3cr3t-pw"
DEAD_URL = f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/jsonsnap_gone"
REFUSED = 'connection to server at "127.0.0.1", port 1 failed: Connection refused'
# The first demo material, as the seeded demo writes it.
FIRST_PRICE = Decimal("2153.42")


# ---------------------------------------------------------------- helpers


def demo(url: str, materials: int = 5) -> None:
    result = run("demo", "--db", url, "--materials", str(materials))
    assert result.exit_code == 0, result.output


def export(url: str, repo: Path, when: dt.datetime | str | None = None) -> str:
    """A committed export; returns the new HEAD."""
    args = ["export", "--db", url, "--repo", str(repo)]
    if when is not None:
        stamp = when if isinstance(when, str) else when.strftime("%Y-%m-%dT%H:%M:%SZ")
        args += ["--timestamp", stamp]
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("committed "), result.output
    return head(repo)


def stamp_of(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def past(**delta: float) -> dt.datetime:
    """A snapshot time this far in the past, to the second (git's precision)."""
    return (dt.datetime.now(dt.UTC) - dt.timedelta(**delta)).replace(microsecond=0)


def canon(value):
    """A value with its exact type and digits: Decimal("20.00") != Decimal("20.0") here."""
    if isinstance(value, dict):
        return ("dict", {key: canon(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return (type(value).__name__, [canon(item) for item in value])
    if isinstance(value, Decimal):
        return ("Decimal", str(value))
    if isinstance(value, dt.datetime):
        # Aware datetimes are compared as instants; naive ones as they are.
        if value.tzinfo is None:
            return ("naive datetime", value.isoformat())
        return ("aware datetime", value.astimezone(dt.UTC).isoformat())
    return (type(value).__name__, value)


def assert_same_rows(got: list[dict], expected: list[dict]) -> None:
    assert [sorted(row) for row in got] == [sorted(row) for row in expected]
    assert [canon(row) for row in got] == [canon(row) for row in expected]


def admin() -> sa.Engine:
    return sa.create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")


def admin_sql(*statements: str) -> None:
    engine = admin()
    try:
        with engine.connect() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


def db_name(url: str) -> str:
    name = sa.make_url(url).database
    assert name
    return name


def with_password(url: str, user: str | None = None) -> str:
    parsed = sa.make_url(url).set(password=PASSWORD)
    if user:
        parsed = parsed.set(username=user)
    return parsed.render_as_string(hide_password=False)


def fallback_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "jsonsnap.loader" and r.levelno == logging.WARNING
    ]


def assert_from_snapshot(loaded, repo: Path, when: dt.datetime | str) -> None:
    commit = head(repo)
    stamp = when if isinstance(when, str) else stamp_of(when)
    assert loaded.source.describe() == f"snapshot {commit[:10]} {stamp}"
    assert loaded.source.commit == commit
    assert loaded.source.is_database is False


# ---------------------------------------------------------------- the database path


def test_database_path_returns_the_rows_with_their_types(db_url, repo_path, caplog):
    caplog.set_level(logging.WARNING, logger="jsonsnap.loader")
    demo(db_url)
    loaded = FallbackLoader(db_url, str(repo_path)).load_table("materials")
    assert loaded.source.describe() == "db"
    assert loaded.source.is_database is True
    assert [row["id"] for row in loaded.rows] == [1, 2, 3, 4, 5]
    first = loaded.rows[0]
    assert canon(first["unit_price"]) == ("Decimal", "2153.42")
    assert canon(first["quantity"]) == ("Decimal", "4495.304")
    assert canon(first["vat_rate"]) == ("Decimal", "20.00")
    assert first["available_from"] == dt.date(2026, 1, 30)
    assert first["attributes"] == {"finition": "rénovation", "couleur": None, "poids_kg": 27.5}
    assert first["label"] == "Laine de verre 100 mm — rénovation"
    if db_url.startswith("postgresql"):
        # timestamptz: aware, the same instant whatever the session's zone.
        assert first["updated_at"].tzinfo is not None
        assert first["updated_at"] == dt.datetime(2026, 7, 21, 10, 8, 37, tzinfo=dt.UTC)
    else:
        assert first["updated_at"] == dt.datetime(2026, 7, 21, 10, 8, 37)
    # The repository does not even exist: the database path never looks at it.
    assert not repo_path.exists()
    assert fallback_warnings(caplog) == []


# ---------------------------------------------------------------- PostgreSQL outages


def test_dropped_postgres_database_serves_head_with_the_same_types(pg_url, repo_path, caplog):
    caplog.set_level(logging.WARNING, logger="jsonsnap.loader")
    demo(pg_url)
    loader = FallbackLoader(pg_url, str(repo_path))
    up = loader.load_table("materials")
    assert up.source.describe() == "db"
    when = past(days=2, hours=3, minutes=10)
    commit = export(pg_url, repo_path, when)

    admin_sql(f'DROP DATABASE "{db_name(pg_url)}" WITH (FORCE)')
    down = loader.load_table("materials")

    assert_same_rows(down.rows, up.rows)
    assert all(row["updated_at"].tzinfo is not None for row in down.rows)
    assert_from_snapshot(down, repo_path, when)
    [message] = fallback_warnings(caplog)
    assert commit[:10] in message
    assert stamp_of(when) in message
    assert "(2d 3h old)" in message
    assert f'database "{db_name(pg_url)}" does not exist' in message


def test_port_nothing_listens_on_serves_head(pg_url, repo_path, caplog):
    caplog.set_level(logging.WARNING, logger="jsonsnap.loader")
    demo(pg_url)
    up = FallbackLoader(pg_url, str(repo_path)).load_table("sections")
    when = past(hours=5, minutes=20)
    commit = export(pg_url, repo_path, when)

    down = FallbackLoader(DEAD_URL, str(repo_path)).load_table("sections")

    assert_same_rows(down.rows, up.rows)
    assert len(down.rows) == 8
    assert_from_snapshot(down, repo_path, when)
    [message] = fallback_warnings(caplog)
    assert message == (
        f"database unavailable ({REFUSED}); serving sections from snapshot {commit[:10]} "
        f"of {stamp_of(when)} (5h 20m old)"
    )
    assert PASSWORD not in caplog.text


@pytest.fixture
def reader_role(pg_url):
    """A login role that reads everything through PUBLIC's CONNECT privilege; dropped after."""
    role = f"jsonsnap_reader_{uuid.uuid4().hex[:8]}"
    admin_sql(f'CREATE ROLE "{role}" LOGIN', f'GRANT pg_read_all_data TO "{role}"')
    yield role
    admin_sql(
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'",
        f'DROP ROLE IF EXISTS "{role}"',
    )


def test_revoked_connect_privilege_serves_head(pg_url, repo_path, reader_role, caplog):
    caplog.set_level(logging.WARNING, logger="jsonsnap.loader")
    demo(pg_url)
    reader_url = with_password(pg_url, reader_role)
    loader = FallbackLoader(reader_url, str(repo_path))
    up = loader.load_table("materials")
    assert up.source.describe() == "db"
    when = past(days=1, hours=1, minutes=10)
    export(pg_url, repo_path, when)

    name = db_name(pg_url)
    admin_sql(
        f'REVOKE CONNECT ON DATABASE "{name}" FROM PUBLIC',
        # Sessions already open keep their privileges: end them, as a restart would.
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{reader_role}'",
    )
    down = loader.load_table("materials")

    assert_same_rows(down.rows, up.rows)
    assert_from_snapshot(down, repo_path, when)
    [message] = fallback_warnings(caplog)
    assert f'permission denied for database "{name}"' in message
    assert "(1d 1h old)" in message
    assert PASSWORD not in caplog.text


# ---------------------------------------------------------------- SQLite outages


def _delete(path):
    path.unlink()


def _replace_with_a_directory(path):
    path.unlink()
    path.mkdir()


@pytest.mark.parametrize("outage", [_delete, _replace_with_a_directory])
def test_sqlite_file_gone_serves_head(sqlite_url, tmp_path, repo_path, caplog, outage):
    caplog.set_level(logging.WARNING, logger="jsonsnap.loader")
    demo(sqlite_url)
    up = FallbackLoader(sqlite_url, str(repo_path)).load_table("materials")
    when = past(hours=2, minutes=30)
    export(sqlite_url, repo_path, when)

    outage(tmp_path / "app.db")
    down = FallbackLoader(sqlite_url, str(repo_path)).load_table("materials")

    assert_same_rows(down.rows, up.rows)
    assert_from_snapshot(down, repo_path, when)
    [message] = fallback_warnings(caplog)
    assert f"no database file at {tmp_path / 'app.db'}" in message


def test_a_loader_that_read_the_sqlite_file_falls_back_once_it_is_gone(
    sqlite_url, tmp_path, repo_path, monkeypatch, caplog
):
    """The app's loader lives as long as the process: it must notice the file is gone."""
    caplog.set_level(logging.WARNING, logger="jsonsnap.loader")
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    monkeypatch.setenv("JSONSNAP_REPO", str(repo_path))
    demo(sqlite_url)
    up = load_table("materials")
    assert up.source.describe() == "db"
    when = past(hours=3, minutes=30)
    export(sqlite_url, repo_path, when)

    (tmp_path / "app.db").unlink()
    (tmp_path / "app.db").mkdir()
    down = load_table("materials")

    assert_from_snapshot(down, repo_path, when)
    assert_same_rows(down.rows, up.rows)


# ---------------------------------------------------------------- module functions


def test_module_functions_read_the_environment(pg_url, repo_path, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="jsonsnap.loader")
    monkeypatch.setenv("DATABASE_URL", pg_url)
    monkeypatch.setenv("JSONSNAP_REPO", str(repo_path))
    demo(pg_url, materials=4)
    up = load_materials_data()
    assert up.source.describe() == "db"
    assert [row["id"] for row in up.rows] == [1, 2, 3, 4]
    assert_same_rows(load_table("materials").rows, up.rows)
    when = past(days=3, hours=2, minutes=10)
    export(pg_url, repo_path, when)

    admin_sql(f'DROP DATABASE "{db_name(pg_url)}" WITH (FORCE)')
    down = load_materials_data()

    assert_same_rows(down.rows, up.rows)
    assert_from_snapshot(down, repo_path, when)
    assert_same_rows(load_table("materials").rows, up.rows)
    assert all("(3d 2h old)" in message for message in fallback_warnings(caplog))
    assert len(fallback_warnings(caplog)) == 2


def test_explicit_arguments_win_over_the_environment(sqlite_url, repo_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", DEAD_URL)
    monkeypatch.setenv("JSONSNAP_REPO", str(repo_path.parent / "elsewhere"))
    demo(sqlite_url, materials=3)
    loaded = load_materials_data(database_url=sqlite_url, repo_path=str(repo_path))
    assert loaded.source.describe() == "db"
    assert [row["reference"] for row in loaded.rows] == ["MAT-00001", "MAT-00002", "MAT-00003"]


def test_defaults_are_the_cli_defaults(tmp_path, caplog):
    """No arguments and no environment: sqlite:///data/app.db and snapshots/, as the CLI."""
    caplog.set_level(logging.WARNING, logger="jsonsnap.loader")
    assert run("demo", "--materials", "2").exit_code == 0
    up = load_table("materials")
    assert up.source.describe() == "db"
    assert [row["id"] for row in up.rows] == [1, 2]
    result = run("export", "--timestamp", "2026-11-01T02:00:00Z")
    assert result.exit_code == 0, result.output
    loaded = FallbackLoader().load_table("materials")
    assert loaded.source.describe() == "db"

    shutil.rmtree(tmp_path / "data")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "app.db").mkdir()
    down = FallbackLoader().load_table("materials")
    assert_same_rows(down.rows, up.rows)
    assert_from_snapshot(down, tmp_path / "snapshots", "2026-11-01T02:00:00Z")


# ---------------------------------------------------------------- git objects, not files


def test_fallback_reads_git_objects_never_the_work_tree(sqlite_url, repo_path):
    demo(sqlite_url)
    up = {
        name: FallbackLoader(sqlite_url, str(repo_path)).load_table(name).rows
        for name in ("materials", "sections", "suppliers")
    }
    export(sqlite_url, repo_path, "2026-11-20T02:00:00Z")

    tables = repo_path / "tables"
    (tables / "materials.json").write_text('[{"id": 999, "unit_price": "0.00"}]\n')
    (tables / "sections.json").unlink()
    (tables / "suppliers.json").write_bytes(b"\x00 not json at all")
    (repo_path / "manifest.json").write_text("{}")

    loader = FallbackLoader(DEAD_URL, str(repo_path))
    for name, rows in up.items():
        down = loader.load_table(name)
        assert_same_rows(down.rows, rows)
        assert_from_snapshot(down, repo_path, "2026-11-20T02:00:00Z")
    # The loader only read: the damage it ignored is still there.
    assert (tables / "materials.json").read_text() == '[{"id": 999, "unit_price": "0.00"}]\n'
    assert not (tables / "sections.json").exists()


# ---------------------------------------------------------------- the cache


def test_rows_are_decoded_once_per_head_commit(sqlite_url, repo_path):
    demo(sqlite_url)
    up = FallbackLoader(sqlite_url, str(repo_path)).load_table("materials")
    export(sqlite_url, repo_path, "2026-11-20T02:00:00Z")
    loader = FallbackLoader(DEAD_URL, str(repo_path))
    first = loader.load_table("materials")
    assert_same_rows(first.rows, up.rows)

    # The data file's object is gone: only the cache can still answer.
    loose_object(repo_path, "HEAD:tables/materials.json").unlink()
    second = loader.load_table("materials")

    assert_same_rows(second.rows, first.rows)
    assert second.source == first.source
    assert second.rows is not first.rows
    # A loader without that cache cannot read the table any more.
    with pytest.raises(DataUnavailable):
        FallbackLoader(DEAD_URL, str(repo_path)).load_table("materials")


def test_a_new_export_commit_is_served_by_the_next_call(sqlite_url, repo_path):
    demo(sqlite_url)
    up = FallbackLoader(sqlite_url, str(repo_path)).load_table("materials")
    old = export(sqlite_url, repo_path, "2026-11-20T02:00:00Z")
    loader = FallbackLoader(DEAD_URL, str(repo_path))
    first = loader.load_table("materials")
    assert first.source.describe() == f"snapshot {old[:10]} 2026-11-20T02:00:00Z"
    assert_same_rows(loader.load_table("materials").rows, up.rows)

    execute(sqlite_url, "UPDATE materials SET unit_price = 18.90, label = 'Plâtre' WHERE id = 1")
    execute(sqlite_url, "DELETE FROM material_tags WHERE material_id = 5")
    execute(sqlite_url, "DELETE FROM materials WHERE id = 5")
    new = export(sqlite_url, repo_path, "2026-11-21T02:00:00Z")
    assert new != old

    after = loader.load_table("materials")
    assert after.source.describe() == f"snapshot {new[:10]} 2026-11-21T02:00:00Z"
    assert [row["id"] for row in after.rows] == [1, 2, 3, 4]
    assert canon(after.rows[0]["unit_price"]) == ("Decimal", "18.90")
    assert after.rows[0]["label"] == "Plâtre"
    assert_same_rows(after.rows[1:], up.rows[1:4])


def test_changing_returned_rows_does_not_change_the_cache(sqlite_url, repo_path):
    """A caller that edits its rows (a computed field, a nested tweak) must not poison others."""
    demo(sqlite_url)
    up = FallbackLoader(sqlite_url, str(repo_path)).load_table("materials")
    export(sqlite_url, repo_path, "2026-11-20T02:00:00Z")
    loader = FallbackLoader(DEAD_URL, str(repo_path))

    first = loader.load_table("materials")
    first.rows[0]["unit_price"] = Decimal("0.00")
    first.rows[0]["attributes"]["couleur"] = "rose"
    first.rows[0]["attributes"]["ajout"] = 1
    first.rows.pop()

    second = loader.load_table("materials")
    assert_same_rows(second.rows, up.rows)
    assert second.rows[0]["attributes"] == {
        "finition": "rénovation",
        "couleur": None,
        "poids_kg": 27.5,
    }


# ---------------------------------------------------------------- both sources fail


def test_database_down_and_no_repository_raise_data_unavailable(tmp_path, caplog):
    missing = tmp_path / "no-snapshots"
    with pytest.raises(DataUnavailable) as raised:
        FallbackLoader(DEAD_URL, str(missing)).load_table("materials")
    message = str(raised.value)
    assert message == (
        f"table 'materials' is unavailable: database: {REFUSED}; "
        f"snapshot at HEAD of {missing}: "
        f"{missing} is not a snapshot repository; run `jsonsnap init` first"
    )
    assert PASSWORD not in message
    assert "127.0.0.1:1" not in message
    assert raised.value.__cause__ is None
    assert not missing.exists()
    assert PASSWORD not in caplog.text


def test_database_down_and_an_empty_repository_raise_data_unavailable(tmp_path):
    repo = tmp_path / "empty"
    assert run("init", "--repo", str(repo)).exit_code == 0
    with pytest.raises(DataUnavailable) as raised:
        load_materials_data(database_url=DEAD_URL, repo_path=str(repo))
    message = str(raised.value)
    assert message.startswith(f"table 'materials' is unavailable: database: {REFUSED}; ")
    assert f"snapshot at HEAD of {repo}: " in message
    assert PASSWORD not in message


def test_a_table_in_neither_source_names_both_causes(pg_url, repo_path):
    demo(pg_url)
    export(pg_url, repo_path, "2026-11-20T02:00:00Z")
    url = with_password(pg_url)  # trust authentication: the password is accepted and unused
    assert FallbackLoader(url, str(repo_path)).load_table("sections").source.describe() == "db"

    with pytest.raises(DataUnavailable) as raised:
        FallbackLoader(url, str(repo_path)).load_table("invoices")
    message = str(raised.value)
    commit = head(repo_path)
    assert message.startswith("table 'invoices' is unavailable: database: ")
    assert message.endswith(
        f"; snapshot at HEAD of {repo_path}: unknown table 'invoices' in snapshot "
        f"{commit[:10]} (tables: material_tags, materials, sections, suppliers)"
    )
    assert PASSWORD not in message
    # The database's cause is said, not just the table's name echoed back.
    database_cause = message.split("database: ", 1)[1].split("; snapshot at HEAD", 1)[0]
    assert re.search(r"no such table|does not exist", database_cause, re.IGNORECASE), message


def test_missing_table_in_the_database_falls_back_when_the_snapshot_has_it(
    sqlite_url, repo_path, caplog
):
    """A missing table is one of the failures the loader covers, not only a dead server."""
    caplog.set_level(logging.WARNING, logger="jsonsnap.loader")
    demo(sqlite_url)
    up = FallbackLoader(sqlite_url, str(repo_path)).load_table("material_tags")
    export(sqlite_url, repo_path, "2026-11-20T02:00:00Z")
    execute(sqlite_url, "DROP TABLE material_tags")

    down = FallbackLoader(sqlite_url, str(repo_path)).load_table("material_tags")

    assert_same_rows(down.rows, up.rows)
    assert_from_snapshot(down, repo_path, "2026-11-20T02:00:00Z")
    assert len(fallback_warnings(caplog)) == 1
    assert os.path.exists(sqlite_url.removeprefix("sqlite:///"))
