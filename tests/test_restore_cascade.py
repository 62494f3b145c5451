"""Restoring one table never cascades into the tables that reference it."""

from conftest import engine_for, execute, run


def _rows(url: str, table: str) -> list[tuple]:
    engine = engine_for(url)
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY id")]
    engine.dispose()
    return rows


def _parent_changed_after_a_snapshot(db_url, repo_path) -> tuple[str, ...]:
    """parent 1..2 with cascading children, exported on 2026-11-20, then parent 1 renamed."""
    execute(
        db_url,
        "CREATE TABLE parent (id integer PRIMARY KEY, name text)",
        "CREATE TABLE child (id integer PRIMARY KEY,"
        " parent_id integer REFERENCES parent(id) ON DELETE CASCADE)",
        "INSERT INTO parent VALUES (1, 'a'), (2, 'b')",
        "INSERT INTO child VALUES (10, 1), (11, 2)",
    )
    args = ("--db", db_url, "--repo", str(repo_path))
    assert run("export", *args, "--timestamp", "2026-11-20T02:00:00Z").exit_code == 0
    execute(db_url, "UPDATE parent SET name = 'z' WHERE id = 1")
    return args


def test_restoring_a_parent_table_keeps_rows_that_cascade_from_it(db_url, repo_path):
    args = _parent_changed_after_a_snapshot(db_url, repo_path)

    result = run("restore", *args, "--date", "2026-11-20", "--table", "parent", "--yes")

    assert result.exit_code == 0, result.output
    assert _rows(db_url, "parent") == [(1, "a"), (2, "b")]
    assert _rows(db_url, "child") == [(10, 1), (11, 2)]


def test_the_foreign_key_still_cascades_after_a_restore(db_url, repo_path):
    args = _parent_changed_after_a_snapshot(db_url, repo_path)
    assert run("restore", *args, "--date", "2026-11-20", "--yes").exit_code == 0

    execute(
        db_url,
        "PRAGMA foreign_keys = ON" if db_url.startswith("sqlite") else "SELECT 1",
        "DELETE FROM parent WHERE id = 1",
    )

    assert _rows(db_url, "child") == [(11, 2)]
