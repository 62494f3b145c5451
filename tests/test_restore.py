"""`jsonsnap restore`: a past snapshot back into the database, exactly, in one transaction,
backed up first and recorded after; refusing bad input and rolling back failures.

Real SQLite files, real PostgreSQL databases (a second, empty one for disaster recovery)
and real git repositories. "Exactly" is checked on PostgreSQL with every row's `t::text`
and on SQLite with every row as SQLAlchemy reads it.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import PG_SERVER, engine_for, execute, git, head, repo_state, run

from backend.db import make_engine

DAY1 = "2026-11-20T02:00:00Z"
DAY2 = "2026-11-21T02:00:00Z"
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


@pytest.fixture(autouse=True)
def _utc(monkeypatch):
    monkeypatch.setenv("JSONSNAP_TZ", "UTC")


@pytest.fixture
def fresh_pg_url(pg_server) -> str:
    """A second, brand-new and empty PostgreSQL database."""
    name = f"jsonsnap_fresh_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    yield sa.make_url(PG_SERVER).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


# -------------------------------------------------------------------- helpers


def is_pg(url: str) -> bool:
    return url.startswith("postgresql")


def export(url: str, repo: Path, stamp: str | None = None) -> str:
    args = ["export", "--db", url, "--repo", str(repo)]
    result = run(*args, *(["--timestamp", stamp] if stamp else []))
    assert result.exit_code == 0, result.output
    return result.stdout


def restore(url: str, repo: Path, *args: str):
    return run("restore", "--db", url, "--repo", str(repo), *args)


def restored(url: str, repo: Path, *args: str) -> list[str]:
    result = restore(url, repo, *args)
    assert (result.exit_code, result.stderr) == (0, ""), result.output
    return result.stdout.splitlines()


def subjects(repo: Path) -> list[str]:
    return git(repo, "log", "--format=%s").splitlines()


def state(url: str) -> dict[str, list]:
    """Every table's rows: on PostgreSQL as `t::text`, on SQLite as SQLAlchemy reads them.

    The alias is not `t`: a column of that name would be read instead of the row.
    """
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            names = sorted(sa.inspect(conn).get_table_names())
            if is_pg(url):
                return {
                    name: conn.exec_driver_sql(
                        f'SELECT whole_row::text FROM "{name}" whole_row ORDER BY 1'
                    )
                    .scalars()
                    .all()
                    for name in names
                }
            tables = {}
            for name in names:
                table = sa.Table(name, sa.MetaData(), autoload_with=conn)
                tables[name] = sorted((tuple(r) for r in conn.execute(sa.select(table))), key=repr)
            return tables
    finally:
        engine.dispose()


def one_line_error(result, code: int) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("Error: ")
    return result.stderr.removeprefix("Error: ").removesuffix("\n")


def db_label(url: str) -> str:
    """How jsonsnap names the database in an error (password masked)."""
    return make_engine(url).url.render_as_string(hide_password=True)


def materials(url: str) -> None:
    doc = "jsonb" if is_pg(url) else "json"
    execute(
        url,
        "CREATE TABLE sections (id integer PRIMARY KEY, label varchar(40) NOT NULL)",
        "CREATE TABLE materials (id integer PRIMARY KEY, label varchar(80) NOT NULL,"
        " section_id integer REFERENCES sections (id), unit_price numeric(12, 2) NOT NULL,"
        f" attributes {doc})",
        "INSERT INTO sections VALUES (1, 'Plomberie'), (2, 'Électricité')",
        "INSERT INTO materials VALUES"
        """ (1, 'Tuyau PER', 1, 10.00, '{"couleur": "rouge", "poids": 12.50}'),"""
        " (2, 'Coude', 1, 4.20, NULL), (3, 'Gaine', 2, 12.00, '[]'),"
        """ (4, 'Prise', 2, 163.67, '{"big": 1234567890123456789012345}')""",
    )


def two_days(url: str, repo: Path) -> tuple[str, str, dict]:
    """Day 1 exported, its state kept; day 2 (materials +2 -1 ~1, sections ~1) exported."""
    materials(url)
    export(url, repo, DAY1)
    first, day1 = head(repo), state(url)
    execute(
        url,
        "DELETE FROM materials WHERE id = 4",
        "INSERT INTO materials VALUES (5, 'Raccord', 1, 2.50, '{}'), (6, 'Fusible', 2, 0.80, NULL)",
        "UPDATE materials SET unit_price = 11.00 WHERE id = 1",
        "UPDATE sections SET label = 'Électricité générale' WHERE id = 2",
    )
    export(url, repo, DAY2)
    return first, head(repo), day1


# ------------------------------------------------------------------- fidelity

EVERY_TYPE_PG = [
    "CREATE TABLE everything (id serial PRIMARY KEY, n numeric, n2 numeric(12, 2),"
    " tz timestamptz, ts timestamp, d date, t time, iv interval, b bytea, u uuid, j jsonb,"
    " jj json, arr text[], ia int[], f double precision, r real, ok boolean, s text,"
    " v varchar(20), ident int GENERATED BY DEFAULT AS IDENTITY)",
    "INSERT INTO everything (n, n2, tz, ts, d, t, iv, b, u, j, jj, arr, ia, f, r, ok, s, v)"
    " VALUES (12.50, 163.67, '2026-11-20 02:00:00.123456+01', '2026-11-20 02:00:00',"
    " '2026-11-20', '12:34:56.789', '1 year 2 months 3 days 04:05:06.5', '\\x00ff0a5c',"
    " 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',"
    """ '{"price": 12.50, "big": 1234567890123456789012345, "nested": {"a": [1, 2.0, "x"]},"""
    """ "e": 1e2, "neg": -0.0, "s": "tab\\t quote\\" é"}',"""
    """ '{"x":1.10,"y":[true,null],"z":[]}',"""
    """ ARRAY['a,b', '"q"', 'back\\slash', NULL, 'NULL', E'new\\nline', '{}', ''],"""
    " ARRAY[1, NULL, 3], 'NaN', 0.1, true,"
    """ E'line1\\nline2\\ttab \\\\ back "dq" ''sq'' \\r end', 'é ü 日本 😀')""",
    "INSERT INTO everything (n, n2, tz, ts, d, t, iv, b, u, j, jj, arr, ia, f, r, ok, s, v)"
    " VALUES ('NaN', -0.01, 'infinity', '-infinity', 'infinity', '24:00:00',"
    " '-1 mons +3 days -00:00:01', '\\x', '00000000-0000-0000-0000-000000000000', '[]',"
    " '{}', '{}', '{{1,2},{3,4}}', 'Infinity', '-Infinity', false, '', '\\N')",
    "INSERT INTO everything (f) VALUES ('-Infinity')",
    "INSERT INTO everything (n, n2, tz, ts, d, t, iv, b, u, j, jj, arr, ia, f, r, ok, s, v)"
    " VALUES (1e-20, 0, '0044-03-15 12:00:00+00 BC', '10000-01-01 00:00:00', '0044-03-15 BC',"
    " '00:00:00', '0', '\\x01', 'ffffffff-ffff-ffff-ffff-ffffffffffff', '\"str\"', '3.0',"
    " ARRAY[]::text[], ARRAY[]::int[], -0.0, 3.4e38, true, E'\\\\.', 'x\\ty')",
    "CREATE TABLE pairs (a integer, b text)",
    "INSERT INTO pairs VALUES (1, 'x'), (1, 'x'), (2, NULL), (NULL, NULL)",
    "CREATE TABLE codes (code varchar(10) PRIMARY KEY, label text)",
    "INSERT INTO codes VALUES ('b', 'bee'), ('B', 'Bee'), ('é', 'e acute'), ('a b', 'space')",
]


def test_postgres_every_type_restored_exactly(pg_url, repo_path):
    execute(pg_url, *EVERY_TYPE_PG)
    export(pg_url, repo_path, DAY1)
    first, day1 = head(repo_path), state(pg_url)
    assert len(day1["everything"]) == 4
    execute(
        pg_url,
        "DELETE FROM everything WHERE id = 2",
        "UPDATE everything SET s = 'changed', j = '{}', arr = '{z}', tz = now() WHERE id = 1",
        "INSERT INTO everything (s) VALUES ('new')",
        "DELETE FROM pairs WHERE a = 1",
        "INSERT INTO pairs VALUES (3, 'y')",
        "UPDATE codes SET label = 'changed'",
    )
    export(pg_url, repo_path, DAY2)
    second = head(repo_path)
    assert state(pg_url) != day1

    lines = restored(pg_url, repo_path, "--date", "2026-11-20", "--yes")
    recorded = head(repo_path)
    assert lines == [
        f"restore to {first[:10]} (snapshot {DAY1})",
        "  codes ~4",
        "  everything +1 -1 ~1",
        "  pairs +2 -1",
        "restored rows: codes 4, everything 4, pairs 4",
        f"recorded as {recorded[:10]}",
        f"undo with: jsonsnap restore --commit {second[:10]}",
    ]
    assert state(pg_url) == day1


def test_sqlite_every_type_restored_exactly(sqlite_url, repo_path):
    execute(
        sqlite_url,
        "CREATE TABLE everything (id integer PRIMARY KEY, price numeric(12, 2), ratio real,"
        " ok boolean, born date, at datetime, t time, raw blob, doc json, label varchar(40),"
        " note text, big bigint)",
        "INSERT INTO everything VALUES (1, '163.67', 0.1, 1, '2026-12-01',"
        " '2026-11-19 10:00:00.000000', '12:34:56.789000', x'00ff0a',"
        """ '{"couleur": "rouge", "poids": 12.50, "big": 1234567890123456789012345}',"""
        """ 'Tuyau PER', 'deux' || char(10) || 'lignes' || char(9) || '\\ "q" ''s''',"""
        " 9007199254740993)",
        "INSERT INTO everything VALUES (2, '-0.01', 1e999, 0, '1999-12-31',"
        " '2000-01-01 00:00:00.000000', '00:00:00.000000', x'', '[]', '', '', -1)",
        "INSERT INTO everything (id, ratio) VALUES (3, -1e999)",
        "CREATE TABLE loose (id integer PRIMARY KEY, anything)",
        "INSERT INTO loose VALUES (1, 5), (2, 'text'), (3, x'00ff'), (4, 1.5), (5, NULL),"
        " (6, 1e999)",
        "CREATE TABLE pairs (a integer, b text)",
        "INSERT INTO pairs VALUES (1, 'x'), (1, 'x'), (2, NULL)",
    )
    export(sqlite_url, repo_path, DAY1)
    first, day1 = head(repo_path), state(sqlite_url)
    execute(
        sqlite_url,
        "DELETE FROM everything WHERE id = 2",
        "UPDATE everything SET note = 'changed', doc = '{}' WHERE id = 1",
        "INSERT INTO everything (id, note) VALUES (4, 'new')",
        "UPDATE loose SET anything = 'changed' WHERE id IN (1, 3, 4)",
        "DELETE FROM pairs WHERE a = 1",
    )
    export(sqlite_url, repo_path, DAY2)
    assert state(sqlite_url) != day1
    lines = restored(sqlite_url, repo_path, "--date", "2026-11-20", "--yes")
    assert lines[:5] == [
        f"restore to {first[:10]} (snapshot {DAY1})",
        "  everything +1 -1 ~1",
        "  loose ~3",
        "  pairs +2",
        "restored rows: everything 3, loose 6, pairs 3",
    ]
    assert state(sqlite_url) == day1
    engine = engine_for(sqlite_url)
    try:
        with engine.connect() as conn:
            storage = conn.exec_driver_sql(
                "SELECT typeof(anything), quote(anything) FROM loose ORDER BY id"
            ).all()
    finally:
        engine.dispose()
    assert storage == [
        ("integer", "5"),
        ("text", "'text'"),
        ("blob", "X'00FF'"),
        ("real", "1.5"),
        ("null", "NULL"),
        ("real", "Inf"),
    ]


def test_json_null_is_restored_apart_from_sql_null(pg_url, repo_path):
    execute(
        pg_url,
        "CREATE TABLE docs (id integer PRIMARY KEY, a jsonb, b json)",
        "INSERT INTO docs VALUES (1, 'null', 'null'), (2, NULL, NULL), (3, '[null]', '{}')",
    )
    export(pg_url, repo_path, DAY1)
    day1 = state(pg_url)
    assert day1["docs"] == ["(1,null,null)", "(2,,)", "(3,[null],{})"]
    execute(pg_url, "UPDATE docs SET a = '1', b = '1'")
    export(pg_url, repo_path, DAY2)
    restored(pg_url, repo_path, "--date", "2026-11-20", "--yes")
    assert state(pg_url) == day1


def test_json_table_with_wide_integers_and_untyped_values_restores(db_url, repo_path):
    if is_pg(db_url):
        doc, untyped, first, second = "jsonb", "", "", ""
    else:  # SQLite: also a column of no declared type, holding a real and an integer
        doc, untyped, first, second = "json", ", anything", ", 1.5", ", 2"
    execute(
        db_url,
        f"CREATE TABLE docs (id integer PRIMARY KEY, doc {doc}, big bigint{untyped})",
        f"""INSERT INTO docs VALUES (1, '{{"n": 12.50}}', 1234567890123456789{first})""",
        f"INSERT INTO docs VALUES (2, '[1]', -9223372036854775808{second})",
    )
    export(db_url, repo_path, DAY1)
    day1 = state(db_url)
    execute(db_url, "UPDATE docs SET big = 0")
    export(db_url, repo_path, DAY2)
    restored(db_url, repo_path, "--date", "2026-11-20", "--yes")
    assert state(db_url) == day1


# ------------------------------------------------------------------ sequences


def next_ids(url: str, *tables: str, rows: int = 1) -> list[int]:
    """Insert rows without an id into each table; the last id the database chose in each."""
    engine = engine_for(url)
    try:
        with engine.begin() as conn:
            ids = []
            for table in tables:
                for _ in range(rows):
                    insert = f"INSERT INTO {table} (v) VALUES ('next') RETURNING id"
                    chosen = conn.exec_driver_sql(insert).scalar()
                ids.append(chosen)
            return ids
    finally:
        engine.dispose()


def counters(url: str) -> None:
    if is_pg(url):
        execute(
            url,
            "CREATE TABLE serials (id serial PRIMARY KEY, v text)",
            "CREATE TABLE idents (id integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, v text)",
            "CREATE TABLE always (id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text)",
        )
    else:
        execute(
            url,
            "CREATE TABLE serials (id integer PRIMARY KEY, v text)",
            "CREATE TABLE idents (id integer PRIMARY KEY, v text)",
            "CREATE TABLE always (id integer PRIMARY KEY, v text)",
        )


TABLES = ("serials", "idents", "always")


def test_sequences_continue_after_the_restored_rows(db_url, repo_path):
    counters(db_url)
    assert next_ids(db_url, *TABLES, rows=3) == [3, 3, 3]
    export(db_url, repo_path, DAY1)
    assert next_ids(db_url, *TABLES, rows=6) == [9, 9, 9]
    export(db_url, repo_path, DAY2)
    restored(db_url, repo_path, "--date", "2026-11-20", "--yes")
    assert next_ids(db_url, *TABLES) == [4, 4, 4]
    assert next_ids(db_url, *TABLES) == [5, 5, 5]


def test_sequences_restart_after_restoring_an_empty_table(db_url, repo_path):
    counters(db_url)
    execute(db_url, "CREATE TABLE keep (id integer PRIMARY KEY)", "INSERT INTO keep VALUES (1)")
    export(db_url, repo_path, DAY1)
    assert next_ids(db_url, *TABLES, rows=4) == [4, 4, 4]
    export(db_url, repo_path, DAY2)
    lines = restored(db_url, repo_path, "--date", "2026-11-20", "--yes")
    assert lines[4] == "restored rows: always 0, idents 0, keep 1, serials 0"
    assert state(db_url)["serials"] == []
    assert next_ids(db_url, *TABLES) == [1, 1, 1]


# ----------------------------------------------------------------------- undo


def test_safety_snapshot_restore_commit_and_undo(db_url, repo_path):
    first, second, day1 = two_days(db_url, repo_path)
    execute(db_url, "UPDATE materials SET label = 'Coude 90°' WHERE id = 2")  # not exported
    before = state(db_url)

    lines = restored(db_url, repo_path, "--date", "2026-11-20", "--yes")
    restore_commit = head(repo_path)
    safety = git(repo_path, "rev-parse", "HEAD~1").strip()
    assert git(repo_path, "rev-parse", "HEAD~2").strip() == second
    assert lines == [
        f"restore to {first[:10]} (snapshot {DAY1})",
        "  materials +1 -2 ~2",
        "  sections ~1",
        "restored rows: materials 4, sections 2",
        f"safety snapshot of the state before: {safety[:10]}",
        f"recorded as {restore_commit[:10]}",
        f"undo with: jsonsnap restore --commit {safety[:10]}",
    ]
    safety_subject, restore_subject = subjects(repo_path)[1], subjects(repo_path)[0]
    assert re.fullmatch(f"snapshot {STAMP}: materials ~1", safety_subject), safety_subject
    assert restore_subject == (
        f"restore to {first[:7]} (snapshot {DAY1}): materials +1 -2 ~2; sections ~1"
    )
    assert state(db_url) == day1

    # The safety snapshot is the state before: restoring it undoes the restore.
    undo = restored(db_url, repo_path, "--commit", safety[:10], "--yes")
    assert undo[0] == f"restore to {safety[:10]} (snapshot {safety_subject[9:29]})"
    assert state(db_url) == before
    assert subjects(repo_path)[0].startswith(f"restore to {safety[:7]} (snapshot ")


def test_after_a_restore_head_equals_the_database(db_url, repo_path):
    first, _, _ = two_days(db_url, repo_path)
    execute(db_url, "UPDATE materials SET label = 'Coude 90°' WHERE id = 2")  # not exported
    restored(db_url, repo_path, "--date", "2026-11-20", "--yes")
    # The restore commit holds exactly the restored snapshot: same files, same manifest.
    assert git(repo_path, "diff", "--stat", first, "HEAD") == ""
    diff = run("diff", "--db", db_url, "--repo", str(repo_path), "HEAD", "db")
    assert diff.stdout.splitlines()[1:] == ["no differences"]
    assert export(db_url, repo_path) == "no changes\n"


def test_restore_of_an_unchanged_database_makes_no_safety_commit(db_url, repo_path):
    first, second, day1 = two_days(db_url, repo_path)
    lines = restored(db_url, repo_path, "--date", "2026-11-20", "--yes")
    assert lines[-2:] == [
        f"recorded as {head(repo_path)[:10]}",
        f"undo with: jsonsnap restore --commit {second[:10]}",
    ]
    assert git(repo_path, "rev-parse", "HEAD~1").strip() == second
    assert state(db_url) == day1
    # Restoring the state the database already holds changes and records nothing.
    again = restored(db_url, repo_path, "--commit", first, "--yes")
    assert again[:3] == [
        f"restore to {first[:10]} (snapshot {DAY1})",
        "  the database already equals the snapshot",
        "restored rows: materials 4, sections 2",
    ]
    assert len(subjects(repo_path)) == 3
    assert state(db_url) == day1


# ------------------------------------------------------ dry run, confirmation


def test_dry_run_previews_and_changes_nothing(db_url, repo_path):
    first, _, _ = two_days(db_url, repo_path)
    execute(db_url, "DELETE FROM materials WHERE id = 6")
    before_db, before_repo = state(db_url), repo_state(repo_path)
    result = restore(db_url, repo_path, "--date", "2026-11-20", "--dry-run")
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == (
        f"restore to {first[:10]} (snapshot {DAY1})\n"
        "  materials +1 -1 ~1\n"
        "  sections ~1\n"
        "dry run: nothing changed\n"
    )
    assert state(db_url) == before_db
    assert repo_state(repo_path) == before_repo


def test_without_yes_and_without_a_terminal_it_refuses(db_url, repo_path):
    first, _, _ = two_days(db_url, repo_path)
    execute(db_url, "DELETE FROM materials WHERE id = 6")
    before_db, before_repo = state(db_url), repo_state(repo_path)
    result = restore(db_url, repo_path, "--date", "2026-11-20")
    assert result.exit_code == 2
    assert result.stdout == (
        f"restore to {first[:10]} (snapshot {DAY1})\n  materials +1 -1 ~1\n  sections ~1\n"
    )
    assert result.stderr == (
        "Error: no terminal to confirm on: pass --yes to restore, or --dry-run to preview\n"
    )
    assert state(db_url) == before_db
    assert repo_state(repo_path) == before_repo


# ------------------------------------------------------------------- --table


def test_table_option_restores_only_that_table(db_url, repo_path):
    first, _, day1 = two_days(db_url, repo_path)
    now = state(db_url)
    lines = restored(db_url, repo_path, "--date", "2026-11-20", "--table", "sections", "--yes")
    assert lines[:3] == [
        f"restore to {first[:10]} (snapshot {DAY1})",
        "  sections ~1",
        "restored rows: sections 2",
    ]
    after = state(db_url)
    assert after["sections"] == day1["sections"]
    assert after["materials"] == now["materials"]
    assert subjects(repo_path)[0] == f"restore to {first[:7]} (snapshot {DAY1}): sections ~1"


def test_table_option_breaking_a_foreign_key_fails_and_changes_nothing(db_url, repo_path):
    materials(db_url)
    export(db_url, repo_path, DAY1)
    execute(
        db_url,
        "INSERT INTO sections VALUES (3, 'Menuiserie')",
        "INSERT INTO materials VALUES (7, 'Planche', 3, 8.00, NULL)",
    )
    export(db_url, repo_path, DAY2)
    before_db, before_repo = state(db_url), repo_state(repo_path)
    result = restore(db_url, repo_path, "--date", "2026-11-20", "--table", "sections", "--yes")
    message = one_line_error(result, 1)
    if is_pg(db_url):
        assert message == (
            "the restored data breaks a constraint on materials: insert or update on table"
            ' "materials" violates foreign key constraint "materials_section_id_fkey"'
            ' (Key (section_id)=(3) is not present in table "sections".)'
        )
    else:
        assert message == (
            "the restored data breaks a foreign key: a row of materials (rowid 7) refers to a row"
            " missing from sections"
        )
    assert state(db_url) == before_db
    assert repo_state(repo_path) == before_repo


def test_table_option_leaves_rows_of_cascading_children_alone(db_url, repo_path):
    execute(
        db_url,
        "CREATE TABLE sections (id integer PRIMARY KEY, label varchar(40))",
        "CREATE TABLE materials (id integer PRIMARY KEY,"
        " section_id integer REFERENCES sections (id) ON DELETE CASCADE,"
        " supplier_id integer REFERENCES sections (id) ON DELETE SET NULL)",
        "INSERT INTO sections VALUES (1, 'Plomberie'), (2, 'Électricité')",
        "INSERT INTO materials VALUES (1, 1, 2), (2, 2, 1)",
    )
    export(db_url, repo_path, DAY1)
    day1 = state(db_url)
    execute(
        db_url, "UPDATE sections SET label = 'renamed'", "INSERT INTO materials VALUES (3, 1, 1)"
    )
    export(db_url, repo_path, DAY2)
    now = state(db_url)
    restored(db_url, repo_path, "--date", "2026-11-20", "--table", "sections", "--yes")
    after = state(db_url)
    assert after["sections"] == day1["sections"]
    assert after["materials"] == now["materials"]


# -------------------------------------------------------------- foreign keys


def foreign_keys(url: str) -> list:
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            if is_pg(url):
                return conn.exec_driver_sql(
                    "SELECT conname, conrelid::regclass::text, pg_get_constraintdef(oid),"
                    " condeferrable, condeferred, convalidated FROM pg_constraint"
                    " WHERE contype = 'f' ORDER BY 1"
                ).all()
            return conn.exec_driver_sql(
                "SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY 1"
            ).all()
    finally:
        engine.dispose()


def violates(url: str, *statements: str) -> bool:
    """Whether the statements (in one transaction) are refused by a constraint."""
    engine = make_engine(url)  # SQLite: foreign keys on, as the app has them
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
            if is_pg(url):  # deferred constraints too, without committing
                conn.exec_driver_sql("SET CONSTRAINTS ALL IMMEDIATE")
            conn.rollback()
    except sa.exc.IntegrityError:
        return True
    finally:
        engine.dispose()
    return False


def test_self_referencing_table_restores_with_its_constraint(db_url, repo_path):
    execute(
        db_url,
        "CREATE TABLE nodes (id integer PRIMARY KEY, parent_id integer REFERENCES nodes (id),"
        " name text)",
        "INSERT INTO nodes VALUES (5, NULL, 'root')",
        "INSERT INTO nodes VALUES (1, 5, 'a'), (2, 5, 'b'), (3, 1, 'a1'), (4, 3, 'a1x')",
    )
    export(db_url, repo_path, DAY1)
    day1, constraints = state(db_url), foreign_keys(db_url)
    execute(
        db_url,
        "DELETE FROM nodes WHERE id IN (3, 4)",
        "UPDATE nodes SET parent_id = 2 WHERE id = 1",
        "INSERT INTO nodes VALUES (6, 2, 'b1')",
    )
    export(db_url, repo_path, DAY2)
    restored(db_url, repo_path, "--date", "2026-11-20", "--yes")
    assert state(db_url) == day1
    assert foreign_keys(db_url) == constraints
    assert violates(db_url, "INSERT INTO nodes VALUES (99, 1000, 'orphan')")
    assert not violates(db_url, "INSERT INTO nodes VALUES (99, 4, 'leaf')")


def test_deferrable_cycle_restores_on_postgres(pg_url, repo_path):
    execute(
        pg_url,
        "CREATE TABLE a (id integer PRIMARY KEY, b_id integer)",
        "CREATE TABLE b (id integer PRIMARY KEY,"
        " a_id integer REFERENCES a (id) DEFERRABLE INITIALLY DEFERRED)",
        "ALTER TABLE a ADD CONSTRAINT a_b FOREIGN KEY (b_id) REFERENCES b (id)"
        " DEFERRABLE INITIALLY DEFERRED",
    )
    execute(
        pg_url,
        "INSERT INTO a VALUES (1, 10), (2, 20)",
        "INSERT INTO b VALUES (10, 2), (20, 1)",
    )
    export(pg_url, repo_path, DAY1)
    day1, constraints = state(pg_url), foreign_keys(pg_url)
    assert [c[0] for c in constraints] == ["a_b", "b_a_id_fkey"]
    execute(
        pg_url,
        "INSERT INTO a VALUES (3, 30)",
        "INSERT INTO b VALUES (30, 3)",
        "UPDATE b SET a_id = 3 WHERE id = 10",
    )
    export(pg_url, repo_path, DAY2)
    restored(pg_url, repo_path, "--date", "2026-11-20", "--yes")
    assert state(pg_url) == day1
    assert foreign_keys(pg_url) == constraints
    assert violates(pg_url, "INSERT INTO a VALUES (4, 99)")
    assert violates(pg_url, "INSERT INTO b VALUES (99, 42)")
    assert not violates(pg_url, "INSERT INTO a VALUES (4, 40)", "INSERT INTO b VALUES (40, 4)")


def test_non_deferrable_cycle_restores_on_postgres(pg_url, repo_path):
    execute(
        pg_url,
        "CREATE TABLE a (id integer PRIMARY KEY, b_id integer)",
        "CREATE TABLE b (id integer PRIMARY KEY, a_id integer)",
        "INSERT INTO a VALUES (1, NULL), (2, NULL)",
        "INSERT INTO b VALUES (10, 2), (20, 1)",
        "UPDATE a SET b_id = 10 WHERE id = 1",
        "UPDATE a SET b_id = 20 WHERE id = 2",
        "ALTER TABLE a ADD CONSTRAINT a_b FOREIGN KEY (b_id) REFERENCES b (id)",
        "ALTER TABLE b ADD CONSTRAINT b_a FOREIGN KEY (a_id) REFERENCES a (id) ON DELETE CASCADE",
    )
    export(pg_url, repo_path, DAY1)
    day1, constraints = state(pg_url), foreign_keys(pg_url)
    assert [c[2] for c in constraints] == [
        "FOREIGN KEY (b_id) REFERENCES b(id)",
        "FOREIGN KEY (a_id) REFERENCES a(id) ON DELETE CASCADE",
    ]
    execute(pg_url, "UPDATE a SET b_id = NULL", "DELETE FROM b", "DELETE FROM a WHERE id = 2")
    export(pg_url, repo_path, DAY2)
    restored(pg_url, repo_path, "--date", "2026-11-20", "--yes")
    assert state(pg_url) == day1
    assert foreign_keys(pg_url) == constraints
    assert violates(pg_url, "INSERT INTO a VALUES (3, 99)")
    assert violates(pg_url, "INSERT INTO b VALUES (99, 42)")


def test_cycle_restores_on_sqlite(sqlite_url, repo_path):
    execute(
        sqlite_url,
        "CREATE TABLE a (id integer PRIMARY KEY, b_id integer REFERENCES b (id))",
        "CREATE TABLE b (id integer PRIMARY KEY, a_id integer REFERENCES a (id))",
        "INSERT INTO a VALUES (1, NULL), (2, NULL)",
        "INSERT INTO b VALUES (10, 2), (20, 1)",
        "UPDATE a SET b_id = 10 WHERE id = 1",
        "UPDATE a SET b_id = 20 WHERE id = 2",
    )
    export(sqlite_url, repo_path, DAY1)
    day1, constraints = state(sqlite_url), foreign_keys(sqlite_url)
    execute(sqlite_url, "UPDATE a SET b_id = NULL", "DELETE FROM b", "DELETE FROM a WHERE id = 2")
    export(sqlite_url, repo_path, DAY2)
    restored(sqlite_url, repo_path, "--date", "2026-11-20", "--yes")
    assert state(sqlite_url) == day1
    assert foreign_keys(sqlite_url) == constraints
    assert violates(sqlite_url, "INSERT INTO a VALUES (3, 99)")


# ------------------------------------------------- a failure mid-restore


def test_unique_index_violated_mid_restore_rolls_everything_back(db_url, repo_path):
    materials(db_url)
    execute(db_url, "UPDATE materials SET label = 'Coude' WHERE id = 3")  # a duplicate label
    export(db_url, repo_path, DAY1)
    execute(
        db_url,
        "UPDATE materials SET label = 'Gaine' WHERE id = 3",
        "UPDATE sections SET label = 'Électricité générale' WHERE id = 2",
        "CREATE UNIQUE INDEX materials_label ON materials (label)",
    )
    export(db_url, repo_path, DAY2)
    second = head(repo_path)
    execute(db_url, "UPDATE materials SET unit_price = 99.00 WHERE id = 1")  # not exported
    before = state(db_url)

    result = restore(db_url, repo_path, "--date", "2026-11-20", "--yes")
    message = one_line_error(result, 1)
    if is_pg(db_url):
        assert message == (
            f"database error ({db_label(db_url)}): duplicate key value violates unique"
            ' constraint "materials_label"'
        )
    else:
        assert message == (
            f"database error ({db_label(db_url)}): UNIQUE constraint failed: materials.label"
        )
    assert state(db_url) == before
    # What the code does: the safety snapshot was committed before the restore began,
    # and stays; no restore commit follows it.
    assert git(repo_path, "rev-parse", "HEAD~1").strip() == second
    assert re.fullmatch(f"snapshot {STAMP}: materials ~1", subjects(repo_path)[0])
    assert not any(s.startswith("restore to") for s in subjects(repo_path))
    assert git(repo_path, "status", "--porcelain", "--untracked-files=all") == ""
    assert not (repo_path / ".git" / "jsonsnap-staging").exists()
    assert not (repo_path / ".git" / "jsonsnap.lock").exists()
    diff = run("diff", "--db", db_url, "--repo", str(repo_path), "HEAD", "db")
    assert diff.stdout.splitlines()[1:] == ["no differences"]


def test_check_constraint_violated_mid_restore_rolls_back_on_postgres(pg_url, repo_path):
    materials(pg_url)
    export(pg_url, repo_path, DAY1)
    execute(
        pg_url,
        "UPDATE materials SET unit_price = 16.37 WHERE id = 4",
        "UPDATE sections SET label = 'changed'",
        "ALTER TABLE materials ADD CONSTRAINT cheap CHECK (unit_price < 100)",
    )
    export(pg_url, repo_path, DAY2)
    before_db, before_repo = state(pg_url), repo_state(repo_path)
    result = restore(pg_url, repo_path, "--date", "2026-11-20", "--yes")
    assert one_line_error(result, 1) == (
        f'database error ({db_label(pg_url)}): new row for relation "materials" violates check'
        ' constraint "cheap"'
    )
    assert state(pg_url) == before_db
    # The database equalled HEAD, so there was no safety snapshot to commit either.
    assert repo_state(repo_path) == before_repo


def test_insert_trigger_does_not_alter_the_restored_data(db_url, repo_path):
    if is_pg(db_url):
        execute(
            db_url,
            "CREATE TABLE audit (n serial PRIMARY KEY, what text)",
            "CREATE TABLE materials (id integer PRIMARY KEY, label text)",
            "CREATE FUNCTION log_insert() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN INSERT INTO audit (what) VALUES ('insert ' || NEW.id); RETURN NEW; END $$",
            "CREATE TRIGGER materials_insert AFTER INSERT ON materials"
            " FOR EACH ROW EXECUTE FUNCTION log_insert()",
        )
    else:
        execute(
            db_url,
            "CREATE TABLE audit (n integer PRIMARY KEY, what text)",
            "CREATE TABLE materials (id integer PRIMARY KEY, label text)",
            "CREATE TRIGGER materials_insert AFTER INSERT ON materials"
            " BEGIN INSERT INTO audit (what) VALUES ('insert ' || NEW.id); END",
        )
    execute(db_url, "INSERT INTO materials VALUES (1, 'a'), (2, 'b')")
    export(db_url, repo_path, DAY1)
    day1 = state(db_url)
    assert day1["audit"] == (
        ['(1,"insert 1")', '(2,"insert 2")']
        if is_pg(db_url)
        else [(1, "insert 1"), (2, "insert 2")]
    )
    execute(db_url, "UPDATE materials SET label = 'changed'")
    export(db_url, repo_path, DAY2)
    restored(db_url, repo_path, "--date", "2026-11-20", "--yes")
    assert state(db_url) == day1
    # The trigger still works afterwards.
    execute(db_url, "INSERT INTO materials VALUES (3, 'c')")
    assert len(state(db_url)["audit"]) == 3


# -------------------------------------------------------------- schema drift


def test_snapshot_column_missing_from_the_table_fails_unless_ignored(db_url, repo_path):
    _, _, day1 = two_days(db_url, repo_path)
    execute(db_url, "ALTER TABLE materials DROP COLUMN attributes")
    before_db, before_repo = state(db_url), repo_state(repo_path)
    result = restore(db_url, repo_path, "--date", "2026-11-20", "--yes")
    assert one_line_error(result, 1) == (
        "column materials.attributes is in the snapshot but not in the database; "
        "use --ignore-missing-columns to restore without it"
    )
    assert state(db_url) == before_db
    assert repo_state(repo_path) == before_repo

    lines = restored(db_url, repo_path, "--date", "2026-11-20", "--yes", "--ignore-missing-columns")
    assert "  warning: materials.attributes is not in the database: its values are left out" in (
        lines
    )
    after = state(db_url)
    assert after["sections"] == day1["sections"]
    if is_pg(db_url):
        assert after["materials"] == [
            '(1,"Tuyau PER",1,10.00)',
            "(2,Coude,1,4.20)",
            "(3,Gaine,2,12.00)",
            "(4,Prise,2,163.67)",
        ]
    else:
        assert [row[:2] for row in after["materials"]] == [
            (1, "Tuyau PER"),
            (2, "Coude"),
            (3, "Gaine"),
            (4, "Prise"),
        ]


def test_table_column_missing_from_the_snapshot_gets_its_default(db_url, repo_path):
    _, _, day1 = two_days(db_url, repo_path)
    execute(db_url, "ALTER TABLE sections ADD COLUMN position integer DEFAULT 7")
    restored(db_url, repo_path, "--date", "2026-11-20", "--yes")
    after = state(db_url)
    if is_pg(db_url):
        assert after["sections"] == ["(1,Plomberie,7)", "(2,Électricité,7)"]
    else:
        assert after["sections"] == [(1, "Plomberie", 7), (2, "Électricité", 7)]
    assert after["materials"] == day1["materials"]


def columns_of(url: str) -> dict:
    """Per table: columns (name, type, nullable), primary key and foreign keys."""
    engine = engine_for(url)
    try:
        inspector = sa.inspect(engine)
        return {
            name: {
                "columns": [
                    (c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(name)
                ],
                "pk": inspector.get_pk_constraint(name)["constrained_columns"],
                "fks": sorted(
                    (
                        tuple(fk["constrained_columns"]),
                        fk["referred_table"],
                        tuple(fk["referred_columns"]),
                    )
                    for fk in inspector.get_foreign_keys(name)
                ),
            }
            for name in sorted(inspector.get_table_names())
        }
    finally:
        engine.dispose()


def test_table_missing_from_the_database_needs_create_tables(db_url, repo_path):
    _, _, day1 = two_days(db_url, repo_path)
    shape = columns_of(db_url)
    execute(db_url, "DROP TABLE materials")
    before_db, before_repo = state(db_url), repo_state(repo_path)
    result = restore(db_url, repo_path, "--date", "2026-11-20", "--yes")
    assert one_line_error(result, 2) == (
        "table 'materials' is in the snapshot but not in the database; "
        "use --create-tables to create it from the manifest"
    )
    assert state(db_url) == before_db
    assert repo_state(repo_path) == before_repo

    lines = restored(db_url, repo_path, "--date", "2026-11-20", "--yes", "--create-tables")
    assert "  warning: materials will be created from the manifest" in lines
    assert columns_of(db_url) == shape
    assert state(db_url) == day1
    assert violates(db_url, "INSERT INTO materials VALUES (9, 'x', 42, 1.00, NULL)")


def test_disaster_recovery_into_a_brand_new_postgres_database(pg_url, fresh_pg_url, repo_path):
    execute(
        pg_url,
        *EVERY_TYPE_PG,
        "CREATE TABLE sections (id integer PRIMARY KEY, label varchar(40) NOT NULL)",
        "CREATE TABLE materials (id integer PRIMARY KEY, label varchar(80) NOT NULL,"
        " section_id integer NOT NULL REFERENCES sections (id), unit_price numeric(12, 2),"
        " attributes jsonb)",
        "CREATE TABLE material_tags (material_id integer REFERENCES materials (id),"
        " tag varchar(20), PRIMARY KEY (material_id, tag))",
        "CREATE TABLE nodes (id integer PRIMARY KEY, parent_id integer REFERENCES nodes (id))",
        "INSERT INTO sections VALUES (1, 'Plomberie'), (2, 'Électricité')",
        """INSERT INTO materials VALUES (1, 'Tuyau', 2, 163.67, '{"poids": 12.50}'),"""
        " (2, 'Coude', 1, 4.20, NULL)",
        "INSERT INTO material_tags VALUES (1, 'cuivre'), (1, 'eau'), (2, 'eau')",
        "INSERT INTO nodes VALUES (3, NULL), (1, 3), (2, 1)",
    )
    export(pg_url, repo_path, DAY1)
    day1, shape = state(pg_url), columns_of(pg_url)
    execute(pg_url, "UPDATE sections SET label = 'later'")
    export(pg_url, repo_path, DAY2)

    assert state(fresh_pg_url) == {}
    restored(fresh_pg_url, repo_path, "--date", "2026-11-20", "--yes", "--create-tables")
    assert state(fresh_pg_url) == day1
    assert columns_of(fresh_pg_url) == shape
    assert violates(fresh_pg_url, "INSERT INTO material_tags VALUES (42, 'x')")
    diff = run("diff", "--db", fresh_pg_url, "--repo", str(repo_path), "2026-11-20", "db")
    assert diff.stdout.splitlines()[1:] == ["no differences"]


def test_disaster_recovery_into_an_empty_sqlite_file(sqlite_url, tmp_path, repo_path):
    execute(
        sqlite_url,
        "CREATE TABLE sections (id integer PRIMARY KEY, label varchar(40) NOT NULL)",
        "CREATE TABLE materials (id integer PRIMARY KEY, label varchar(80) NOT NULL,"
        " section_id integer NOT NULL REFERENCES sections (id), unit_price numeric(12, 2),"
        " born date, at datetime, raw blob, attributes json)",
        "CREATE TABLE material_tags (material_id integer REFERENCES materials (id),"
        " tag varchar(20), PRIMARY KEY (material_id, tag))",
        "CREATE TABLE loose (id integer PRIMARY KEY, anything)",
        "INSERT INTO sections VALUES (1, 'Plomberie'), (2, 'Électricité')",
        "INSERT INTO materials VALUES (1, 'Tuyau', 2, '163.67', '2026-12-01',"
        """ '2026-11-19 10:00:00.000000', x'00ff', '{"poids": 12.50}'),"""
        " (2, 'Coude', 1, '4.20', NULL, NULL, NULL, NULL)",
        "INSERT INTO material_tags VALUES (1, 'cuivre'), (1, 'eau'), (2, 'eau')",
        "INSERT INTO loose VALUES (1, 5), (2, 'text'), (3, x'00'), (4, 2.5)",
    )
    export(sqlite_url, repo_path, DAY1)
    day1, shape = state(sqlite_url), columns_of(sqlite_url)
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    restored(fresh, repo_path, "--date", "2026-11-20", "--yes", "--create-tables")
    assert state(fresh) == day1
    assert columns_of(fresh) == shape
    assert violates(fresh, "INSERT INTO material_tags VALUES (42, 'x')")


# ----------------------------------------------------------------- bad input


BAD_INPUT = {
    ("--date", "2026-11-20", "--table", "nope"): (
        "unknown table 'nope' in snapshot {first} (tables: materials, sections)"
    ),
    ("--date", "2026-13-01"): "invalid date '2026-13-01': use YYYY-MM-DD",
    ("--date", "2026-02-30"): "invalid date '2026-02-30': use YYYY-MM-DD",
    ("--date", "2026-11-01"): (
        "no snapshot on or before 2026-11-01; the first is 2026-11-20T02:00:00+00:00"
    ),
    ("--date", "2026-11-20T01:00:00Z"): (
        "no snapshot on or before 2026-11-20T01:00:00Z; the first is 2026-11-20T02:00:00+00:00"
    ),
    ("--commit", "nope"): (
        "no snapshot named 'nope': give a date (YYYY-MM-DD), an ISO 8601 time, or a commit"
    ),
    ("--date", "2026-11-20", "--commit", "HEAD"): "give exactly one of --date and --commit",
    (): "give exactly one of --date and --commit",
}


def test_bad_input_exits_2_and_changes_nothing(db_url, repo_path):
    first, _, _ = two_days(db_url, repo_path)
    execute(db_url, "DELETE FROM materials WHERE id = 6")  # a restore would have work to do
    before_db, before_repo = state(db_url), repo_state(repo_path)
    outcomes = {}
    for args in BAD_INPUT:
        result = restore(db_url, repo_path, *args, "--yes")
        outcomes[args] = (result.exit_code, result.stdout, result.stderr)
    assert outcomes == {
        args: (2, "", f"Error: {message.format(first=first[:10])}\n")
        for args, message in BAD_INPUT.items()
    }
    assert state(db_url) == before_db
    assert repo_state(repo_path) == before_repo
