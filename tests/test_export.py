import hashlib
import importlib.resources
import json
import os
import random
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import PG_SERVER, execute, git, head, run

from backend.export import _Worker

T1 = "2026-11-27T02:00:00Z"
T2 = "2026-11-28T02:00:00Z"
T3 = "2026-11-29T02:00:00Z"
MIGRATE = Path(__file__).resolve().parent.parent / "scripts" / "migrate_db_to_json.py"


def export(url, repo, *args, stamp=T2):
    return run("export", "--db", url, "--repo", str(repo), "--timestamp", stamp, *args)


def exported(url, repo, *args, stamp=T2):
    result = export(url, repo, *args, stamp=stamp)
    assert result.exit_code == 0, result.output
    return result


def tree(repo):
    return git(repo, "rev-parse", "HEAD^{tree}").strip()


def subject(repo):
    return git(repo, "log", "-1", "--format=%s").strip()


def rows(repo, name):
    return json.loads((repo / "tables" / f"{name}.json").read_bytes())


def manifest(repo):
    return json.loads((repo / "manifest.json").read_bytes())


def work_tree(repo):
    return {
        p.relative_to(repo).as_posix(): p.read_bytes()
        for p in sorted(repo.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(repo).parts
    }


def error_line(result):
    assert result.output.count("\n") == 1, result.output
    return result.output.removesuffix("\n")


@pytest.fixture
def other_url(db_url, tmp_path):
    """A second database of the same kind as db_url."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'other.db'}"
        return
    url = sa.make_url(db_url)
    name = f"{url.database}_b"
    admin = sa.create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    yield url.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


# --- determinism ----------------------------------------------------------------

SCHEMA = [
    "CREATE TABLE items (id int PRIMARY KEY, name varchar(40), price numeric(10, 2),"
    " seen timestamp)",
    "CREATE TABLE codes (code varchar(10) PRIMARY KEY, label varchar(40))",
    "CREATE TABLE tags (item_id int, tag varchar(20))",
]
ITEMS = [
    (i, f"item {i}", f"{i}.{i % 100:02d}", f"2026-01-{i % 28 + 1:02d} 10:00:00")
    for i in range(1, 31)
]
CODES = ["b", "B", "é", "e", "E", "Z", "a b", "a_b", "ä", "z", "10", "9"]
TAGS = [(1, "x"), (1, "x"), (2, "y"), (3, "x"), (1, "a"), (2, None)]


def item_sql(item):
    return "INSERT INTO items VALUES ({}, '{}', {}, '{}')".format(*item)


def tag_sql(tag):
    item_id, name = tag
    return f"INSERT INTO tags VALUES ({item_id}, {'NULL' if name is None else repr(name)})"


def code_sql(code):
    return f"INSERT INTO codes VALUES ('{code}', 'label {code}')"


def fill_in_order(url):
    execute(
        url,
        *SCHEMA,
        *map(item_sql, ITEMS),
        *map(code_sql, CODES),
        *map(tag_sql, TAGS),
    )


def fill_with_history(url):
    shuffled = CODES[:]
    random.Random(3).shuffle(shuffled)
    execute(
        url,
        *SCHEMA,
        *[item_sql((i, "draft", "0.00", "2020-01-01 00:00:00")) for i, *_ in reversed(ITEMS)],
        *[
            "UPDATE items SET name = '{1}', price = {2}, seen = '{3}' WHERE id = {0}".format(*item)
            for item in ITEMS
        ],
        "DELETE FROM items WHERE id IN (5, 17, 29)",
        *[item_sql(ITEMS[i - 1]) for i in (29, 5, 17)],
        *map(code_sql, shuffled),
        "UPDATE codes SET label = 'x'",
        *[f"UPDATE codes SET label = 'label {c}' WHERE code = '{c}'" for c in CODES],
        *map(tag_sql, reversed(TAGS)),
        "DELETE FROM tags WHERE item_id = 1",
        *[tag_sql(t) for t in TAGS if t[0] == 1],
    )


def test_same_rows_in_any_order_give_identical_snapshots(db_url, other_url, tmp_path):
    fill_in_order(db_url)
    fill_with_history(other_url)
    first, second = tmp_path / "first", tmp_path / "second"
    exported(db_url, first)
    exported(other_url, second)
    assert tree(first) == tree(second)
    assert head(first) == head(second)
    assert work_tree(first) == work_tree(second)
    assert [r["code"] for r in rows(first, "codes")] == sorted(CODES)
    assert [r["id"] for r in rows(first, "items")] == list(range(1, 31))
    assert rows(first, "tags") == [
        {"item_id": 1, "tag": "a"},
        {"item_id": 1, "tag": "x"},
        {"item_id": 1, "tag": "x"},
        {"item_id": 2, "tag": "y"},
        {"item_id": 2, "tag": None},
        {"item_id": 3, "tag": "x"},
    ]


def test_second_export_without_change_commits_nothing(db_url, repo_path):
    fill_in_order(db_url)
    exported(db_url, repo_path)
    before = head(repo_path)
    result = export(db_url, repo_path, stamp=T3)
    assert result.exit_code == 0
    assert result.output == "no changes\n"
    assert head(repo_path) == before
    assert git(repo_path, "rev-list", "--count", "HEAD") == "1\n"
    assert git(repo_path, "status", "--porcelain") == ""


def test_one_field_change_is_one_line_change(db_url, repo_path):
    fill_in_order(db_url)
    exported(db_url, repo_path)
    execute(db_url, "UPDATE items SET price = 99.99 WHERE id = 12")
    result = exported(db_url, repo_path, stamp=T3)
    assert result.output == f"committed {head(repo_path)[:10]} snapshot {T3}: items ~1\n"
    numstat = git(repo_path, "diff", "HEAD~1", "--numstat", "--", "tables")
    assert numstat == "1\t1\ttables/items.json\n"
    diff = git(repo_path, "diff", "HEAD~1", "-U0", "--", "tables/items.json").splitlines()
    assert diff[-2:] == ['-    "price": "12.12",', '+    "price": "99.99",']


# --- the commit -------------------------------------------------------------------


def scripted_changes(url, repo):
    execute(
        url,
        "CREATE TABLE materials (id int PRIMARY KEY, label varchar(40), price numeric(8, 2))",
        "CREATE TABLE suppliers (id int PRIMARY KEY, name varchar(40))",
        "CREATE TABLE untouched (id int PRIMARY KEY)",
        "INSERT INTO materials VALUES (1, 'a', 1), (2, 'b', 2), (3, 'c', 3), (4, 'd', 4),"
        " (5, 'e', 5), (6, 'f', 6)",
        "INSERT INTO suppliers VALUES (1, 'Dupré'), (2, 'Lefèvre'), (3, 'Hélène')",
        "INSERT INTO untouched VALUES (1)",
    )
    exported(url, repo, stamp=T1)
    execute(
        url,
        "INSERT INTO materials VALUES (7, 'g', 7), (8, 'h', 8)",
        "DELETE FROM materials WHERE id = 2",
        "UPDATE materials SET price = price + 1 WHERE id IN (3, 4, 6)",
        "UPDATE suppliers SET name = 'Dupré & fils' WHERE id = 1",
    )
    return exported(url, repo, stamp=T2)


def test_commit_message_summarises_row_changes(db_url, repo_path):
    result = scripted_changes(db_url, repo_path)
    line = f"snapshot {T2}: materials +2 -1 ~3; suppliers ~1"
    assert result.output == f"committed {head(repo_path)[:10]} {line}\n"
    assert git(repo_path, "log", "-1", "--format=%B") == (
        f"{line}\n\njsonsnap-summary: "
        '{"materials":{"added":2,"changed":3,"deleted":1,"note":null},'
        '"suppliers":{"added":0,"changed":1,"deleted":0,"note":null}}\n\n'
    )


def test_first_commit_lists_new_tables(sqlite_url, repo_path):
    execute(
        sqlite_url,
        "CREATE TABLE b (id int PRIMARY KEY)",
        "CREATE TABLE a (id int PRIMARY KEY)",
        "INSERT INTO b VALUES (1), (2)",
    )
    result = exported(sqlite_url, repo_path)
    line = f"snapshot {T2}: a (new table); b +2 (new table)"
    assert result.output == f"committed {head(repo_path)[:10]} {line}\n"
    assert subject(repo_path) == line


def test_commit_dates_are_the_snapshot_time(sqlite_url, repo_path):
    execute(sqlite_url, "CREATE TABLE t (id int PRIMARY KEY)", "INSERT INTO t VALUES (1)")
    exported(sqlite_url, repo_path, stamp="2026-11-28T03:00:00+01:00")
    dates = git(repo_path, "log", "-1", "--format=%aI %cI")
    assert dates == "2026-11-28T02:00:00+00:00 2026-11-28T02:00:00+00:00\n"


def test_default_author_is_jsonsnap(sqlite_url, repo_path):
    execute(sqlite_url, "CREATE TABLE t (id int PRIMARY KEY)")
    exported(sqlite_url, repo_path)
    who = git(repo_path, "log", "-1", "--format=%an <%ae>|%cn <%ce>")
    assert who == "jsonsnap <jsonsnap@localhost>|jsonsnap <jsonsnap@localhost>\n"


def test_author_comes_from_environment(sqlite_url, repo_path, monkeypatch):
    monkeypatch.setenv("JSONSNAP_AUTHOR", "Équipe Ops <ops@example.org>")
    execute(sqlite_url, "CREATE TABLE t (id int PRIMARY KEY)")
    exported(sqlite_url, repo_path)
    who = git(repo_path, "log", "-1", "--format=%an <%ae>|%cn <%ce>")
    assert who == "Équipe Ops <ops@example.org>|Équipe Ops <ops@example.org>\n"


def test_malformed_author_is_refused(sqlite_url, repo_path, monkeypatch):
    monkeypatch.setenv("JSONSNAP_AUTHOR", "nobody")
    execute(sqlite_url, "CREATE TABLE t (id int PRIMARY KEY)")
    result = export(sqlite_url, repo_path)
    assert result.exit_code == 2
    assert (
        error_line(result) == "Error: JSONSNAP_AUTHOR must look like 'Name <email>', not 'nobody'"
    )
    assert not repo_path.exists()


def test_timestamp_before_head_is_refused(sqlite_url, repo_path):
    execute(sqlite_url, "CREATE TABLE t (id int PRIMARY KEY)", "INSERT INTO t VALUES (1)")
    exported(sqlite_url, repo_path)
    execute(sqlite_url, "INSERT INTO t VALUES (2)")
    before = head(repo_path)
    result = export(sqlite_url, repo_path, stamp=T1)
    assert result.exit_code == 2
    assert error_line(result) == (
        f"Error: snapshot time {T1} is before the last snapshot ({T2}); "
        "snapshots must stay in time order"
    )
    assert head(repo_path) == before


def test_invalid_timestamp_is_refused(sqlite_url, repo_path):
    execute(sqlite_url, "CREATE TABLE t (id int PRIMARY KEY)")
    result = export(sqlite_url, repo_path, stamp="yesterday")
    assert result.exit_code == 2
    assert error_line(result) == (
        "Error: invalid timestamp 'yesterday': use ISO 8601, e.g. 2026-11-28T02:00:00Z"
    )


# --- tables without a primary key ---------------------------------------------------


def test_keyless_table_is_sorted_by_canonical_row(db_url, repo_path):
    execute(
        db_url,
        "CREATE TABLE nokey (name varchar(10), n int)",
        "INSERT INTO nokey VALUES ('b', 1), ('a', 2), ('a', 2), ('a', 10), ('B', 1), (NULL, 3)",
    )
    exported(db_url, repo_path)
    # Canonical rows are compact JSON with sorted keys: "n" sorts before "name",
    # and 1 < 10 < 2 < 3 as text.
    assert rows(repo_path, "nokey") == [
        {"n": 1, "name": "B"},
        {"n": 1, "name": "b"},
        {"n": 10, "name": "a"},
        {"n": 2, "name": "a"},
        {"n": 2, "name": "a"},
        {"n": 3, "name": None},
    ]
    assert manifest(repo_path)["tables"]["nokey"]["primary_key"] == []


def test_keyless_table_counts_duplicates(db_url, repo_path):
    execute(
        db_url,
        "CREATE TABLE nokey (name varchar(10), n int)",
        "INSERT INTO nokey VALUES ('a', 2), ('a', 2), ('b', 1)",
    )
    exported(db_url, repo_path, stamp=T1)
    execute(db_url, "INSERT INTO nokey VALUES ('a', 2)")
    exported(db_url, repo_path, stamp=T2)
    assert subject(repo_path) == f"snapshot {T2}: nokey +1"
    assert rows(repo_path, "nokey") == [{"n": 1, "name": "b"}] + [{"n": 2, "name": "a"}] * 3
    execute(db_url, "DELETE FROM nokey WHERE name = 'a'")
    exported(db_url, repo_path, stamp=T3)
    assert subject(repo_path) == f"snapshot {T3}: nokey -3"


def test_keyless_row_change_is_a_delete_and_an_add(sqlite_url, repo_path):
    execute(
        sqlite_url,
        "CREATE TABLE nokey (name varchar(10), n int)",
        "INSERT INTO nokey VALUES ('a', 2), ('a', 2), ('b', 1)",
    )
    exported(sqlite_url, repo_path, stamp=T1)
    execute(sqlite_url, "UPDATE nokey SET n = 5 WHERE name = 'b'")
    exported(sqlite_url, repo_path, stamp=T2)
    assert subject(repo_path) == f"snapshot {T2}: nokey +1 -1"


# --- choosing what to export --------------------------------------------------------


def three_tables(url):
    execute(
        url,
        "CREATE TABLE a (id int PRIMARY KEY)",
        "CREATE TABLE b (id int PRIMARY KEY)",
        "CREATE TABLE users (id int PRIMARY KEY, login varchar(20), password varchar(40))",
        "INSERT INTO a VALUES (1)",
        "INSERT INTO b VALUES (2)",
        "INSERT INTO users VALUES (1, 'ann', 'secret-1'), (2, 'bob', 'secret-2')",
    )


def test_table_option_exports_only_those_tables(db_url, repo_path):
    three_tables(db_url)
    exported(db_url, repo_path, "--table", "users", "--table", "a")
    assert sorted(manifest(repo_path)["tables"]) == ["a", "users"]
    assert manifest(repo_path)["selection"] == {
        "exclude_columns": [],
        "exclude_tables": [],
        "tables": ["a", "users"],
    }
    assert git(repo_path, "ls-files", "tables").splitlines() == [
        "tables/a.json",
        "tables/users.json",
    ]


def test_exclude_table_option_skips_it(sqlite_url, repo_path):
    three_tables(sqlite_url)
    exported(sqlite_url, repo_path, "--exclude-table", "b")
    assert sorted(manifest(repo_path)["tables"]) == ["a", "users"]
    assert not (repo_path / "tables" / "b.json").exists()
    assert manifest(repo_path)["selection"]["exclude_tables"] == ["b"]


def test_exclude_column_leaves_it_out(db_url, repo_path):
    three_tables(db_url)
    exported(db_url, repo_path, "--exclude-column", "users.password")
    assert rows(repo_path, "users") == [{"id": 1, "login": "ann"}, {"id": 2, "login": "bob"}]
    entry = manifest(repo_path)["tables"]["users"]
    assert entry["excluded_columns"] == ["password"]
    assert manifest(repo_path)["selection"] == {
        "exclude_columns": ["users.password"],
        "exclude_tables": [],
        "tables": [],
    }
    assert [c["name"] for c in entry["columns"]] == ["id", "login"]
    raw = b"".join(work_tree(repo_path).values())
    assert b"secret-" not in raw
    assert b"secret-" not in git(repo_path, "log", "-p", "--format=%B").encode()


def test_schema_option_exports_that_schema(pg_url, repo_path):
    execute(
        pg_url,
        "CREATE TABLE t (id int PRIMARY KEY, v text)",
        "INSERT INTO t VALUES (1, 'public')",
        "CREATE TABLE only_public (id int PRIMARY KEY)",
        "CREATE SCHEMA other",
        "CREATE TABLE other.t (id int PRIMARY KEY, v text)",
        "CREATE TABLE other.child (id int PRIMARY KEY, t_id int REFERENCES other.t(id))",
        "INSERT INTO other.t VALUES (1, 'other'), (2, 'other')",
        "INSERT INTO other.child VALUES (1, 2)",
    )
    result = exported(pg_url, repo_path, "--schema", "other")
    assert result.output == (
        f"committed {head(repo_path)[:10]} snapshot {T2}: child +1 (new table); t +2 (new table)\n"
    )
    data = manifest(repo_path)
    assert data["schema"] == "other"
    assert sorted(data["tables"]) == ["child", "t"]
    assert rows(repo_path, "t") == [{"id": 1, "v": "other"}, {"id": 2, "v": "other"}]
    assert data["tables"]["child"]["foreign_keys"] == [
        {
            "columns": ["t_id"],
            "referred_columns": ["id"],
            "referred_schema": None,  # null: the table's own schema
            "referred_table": "t",
        }
    ]
    bad = export(pg_url, repo_path, "--schema", "other", "--table", "only_public", stamp=T3)
    assert bad.exit_code == 2
    assert error_line(bad) == "Error: unknown table 'only_public' in schema 'other'"


BAD_SELECTIONS = [
    (["--table", "nope"], "Error: unknown table 'nope'"),
    (["--exclude-table", "nope"], "Error: unknown table 'nope'"),
    (
        ["--exclude-column", "users.nope"],
        "Error: --exclude-column 'users.nope' names no TABLE.COLUMN of this database",
    ),
    (
        ["--exclude-column", "password"],
        "Error: --exclude-column 'password' names no TABLE.COLUMN of this database",
    ),
    (["--exclude-column", "users.id"], "Error: cannot exclude primary key column users.id"),
]


def test_bad_selection_is_refused_and_repo_untouched(db_url, repo_path):
    three_tables(db_url)
    exported(db_url, repo_path, stamp=T1)
    execute(db_url, "INSERT INTO a VALUES (5)")
    before = (head(repo_path), work_tree(repo_path))
    for option, message in BAD_SELECTIONS:
        result = export(db_url, repo_path, *option)
        assert result.exit_code == 2, option
        assert error_line(result) == message
        assert (head(repo_path), work_tree(repo_path)) == before
        assert git(repo_path, "status", "--porcelain", "--ignored") == ""


def test_dropped_table_file_disappears(db_url, repo_path):
    three_tables(db_url)
    exported(db_url, repo_path, stamp=T1)
    execute(db_url, "DROP TABLE users")
    result = exported(db_url, repo_path)
    assert result.output == f"committed {head(repo_path)[:10]} snapshot {T2}: users -2 (dropped)\n"
    assert not (repo_path / "tables" / "users.json").exists()
    assert git(repo_path, "ls-files", "tables").splitlines() == ["tables/a.json", "tables/b.json"]
    assert "users" not in manifest(repo_path)["tables"]


def test_added_column_is_a_schema_change(sqlite_url, repo_path):
    three_tables(sqlite_url)
    exported(sqlite_url, repo_path, stamp=T1)
    execute(sqlite_url, "ALTER TABLE b ADD COLUMN note varchar(10)")
    exported(sqlite_url, repo_path)
    assert subject(repo_path) == f"snapshot {T2}: b ~1 (schema changed)"


def test_empty_table_that_gains_a_row_counts_one_added(db_url, repo_path):
    execute(db_url, "CREATE TABLE t (id int PRIMARY KEY)")
    exported(db_url, repo_path, stamp=T1)
    execute(db_url, "INSERT INTO t VALUES (1)")
    result = export(db_url, repo_path)
    assert result.exit_code == 0, result.output
    assert result.output == f"committed {head(repo_path)[:10]} snapshot {T2}: t +1\n"


def test_table_that_becomes_empty_counts_its_rows_deleted(db_url, repo_path):
    execute(db_url, "CREATE TABLE t (id int PRIMARY KEY)", "INSERT INTO t VALUES (1), (2)")
    exported(db_url, repo_path, stamp=T1)
    execute(db_url, "DELETE FROM t")
    exported(db_url, repo_path)
    assert subject(repo_path) == f"snapshot {T2}: t -2"
    assert rows(repo_path, "t") == []


# --- manifest, README, init ---------------------------------------------------------


def test_manifest_describes_tables_and_nothing_else(db_url, repo_path):
    execute(
        db_url,
        "CREATE TABLE parents (id int PRIMARY KEY, name varchar(20) NOT NULL)",
        "CREATE TABLE children (id int PRIMARY KEY, parent_id int REFERENCES parents(id),"
        " note text)",
        "INSERT INTO parents VALUES (1, 'p')",
        "INSERT INTO children VALUES (1, 1, 'n'), (2, NULL, NULL)",
    )
    exported(db_url, repo_path, stamp="2031-05-06T07:08:09Z")
    raw = (repo_path / "manifest.json").read_bytes()
    url = sa.make_url(db_url)
    assert db_url.encode() not in raw
    assert url.database.encode() not in raw
    assert os.path.basename(url.database).encode() not in raw
    assert socket.gethostname().encode() not in raw
    assert b"127.0.0.1" not in raw
    assert b"2031" not in raw
    data = json.loads(raw)
    pg = db_url.startswith("postgresql")
    integer, text = ("integer", "text") if pg else ("INT", "TEXT")
    varchar = "character varying(20)" if pg else "varchar(20)"
    assert data["format"] == 1
    assert data["dialect"] == ("postgresql" if pg else "sqlite")
    assert data["schema"] == ("public" if pg else None)
    assert sorted(data) == ["dialect", "format", "schema", "selection", "tables"]
    assert data["selection"] == {"exclude_columns": [], "exclude_tables": [], "tables": []}
    children = data["tables"]["children"]
    assert children == {
        "columns": [
            {"kind": "integer", "name": "id", "nullable": not pg, "type": integer},
            {"kind": "integer", "name": "parent_id", "nullable": True, "type": integer},
            {"kind": "string", "name": "note", "nullable": True, "type": text},
        ],
        "excluded_columns": [],
        "file": "tables/children.json",
        "foreign_keys": [
            {
                "columns": ["parent_id"],
                "referred_columns": ["id"],
                "referred_schema": None,
                "referred_table": "parents",
            }
        ],
        "primary_key": ["id"],
        "rows": 2,
        "sha256": hashlib.sha256((repo_path / "tables" / "children.json").read_bytes()).hexdigest(),
    }
    parents = data["tables"]["parents"]
    assert parents["columns"][1] == {
        "kind": "string",
        "name": "name",
        "nullable": False,
        "type": varchar,
    }
    assert parents["rows"] == 1
    assert parents["foreign_keys"] == []
    data_file = (repo_path / "tables" / "parents.json").read_bytes()
    assert parents["sha256"] == hashlib.sha256(data_file).hexdigest()


def test_snapshot_repo_gets_a_readme(sqlite_url, repo_path):
    execute(sqlite_url, "CREATE TABLE t (id int PRIMARY KEY)")
    exported(sqlite_url, repo_path)
    readme = importlib.resources.files("backend").joinpath("snapshot_readme.md").read_bytes()
    assert (repo_path / "README.md").read_bytes() == readme
    assert git(repo_path, "ls-files").splitlines() == [
        "README.md",
        "manifest.json",
        "tables/t.json",
    ]


def git_dir_state(repo):
    return {
        p.relative_to(repo).as_posix(): p.read_bytes()
        for p in sorted((repo / ".git").rglob("*"))
        if p.is_file()
    }


def test_init_creates_the_repo_and_is_idempotent(sqlite_url, repo_path):
    result = run("init", "--repo", str(repo_path))
    assert result.exit_code == 0
    assert result.output == f"snapshot repository created at {repo_path}\n"
    assert git(repo_path, "rev-parse", "--show-toplevel").strip() == str(repo_path)
    assert git(repo_path, "symbolic-ref", "HEAD") == "refs/heads/main\n"
    state = git_dir_state(repo_path)
    again = run("init", "--repo", str(repo_path))
    assert again.exit_code == 0
    assert again.output == f"snapshot repository already exists at {repo_path}\n"
    assert git_dir_state(repo_path) == state
    assert git(repo_path, "rev-list", "--all") == ""
    execute(sqlite_url, "CREATE TABLE t (id int PRIMARY KEY)")
    exported(sqlite_url, repo_path)
    assert git(repo_path, "rev-list", "--count", "HEAD") == "1\n"


def test_init_inside_another_repo_makes_its_own(tmp_path):
    outer = tmp_path / "outer"
    outer.mkdir()
    git(outer, "init", "-q")
    inner = outer / "snapshots"
    result = run("init", "--repo", str(inner))
    assert result.exit_code == 0
    assert result.output == f"snapshot repository created at {inner}\n"
    assert git(inner, "rev-parse", "--show-toplevel").strip() == str(inner)


def test_init_uses_jsonsnap_repo_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("JSONSNAP_REPO", str(tmp_path / "from-env"))
    result = run("init")
    assert result.exit_code == 0
    assert result.output == f"snapshot repository created at {tmp_path / 'from-env'}\n"
    assert (tmp_path / "from-env" / ".git").is_dir()


# --- the cron script and the demo ---------------------------------------------------


def migrate(url, *args):
    return subprocess.run(
        [sys.executable, str(MIGRATE), *args],
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        check=False,
    )


def test_migrate_script_exports_into_output_dir(db_url, tmp_path):
    execute(db_url, "CREATE TABLE t (id int PRIMARY KEY)", "INSERT INTO t VALUES (1), (2)")
    out = tmp_path / "out dir"
    result = migrate(db_url, "--output-dir", str(out), "--timestamp", T2)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"committed {head(out)[:10]} snapshot {T2}: t +2 (new table)\n"
    assert result.stderr == ""
    assert rows(out, "t") == [{"id": 1}, {"id": 2}]
    assert git(out, "ls-files").splitlines() == ["README.md", "manifest.json", "tables/t.json"]
    assert not (tmp_path / "snapshots").exists()


def test_migrate_script_accepts_output_dir_with_equals(sqlite_url, tmp_path):
    execute(sqlite_url, "CREATE TABLE t (id int PRIMARY KEY)")
    out = tmp_path / "out"
    result = migrate(sqlite_url, f"--output-dir={out}", "-q")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert git(out, "ls-files").splitlines() == ["README.md", "manifest.json", "tables/t.json"]


def test_migrate_script_without_dir_value_is_refused(sqlite_url, tmp_path):
    execute(sqlite_url, "CREATE TABLE t (id int PRIMARY KEY)")
    result = migrate(sqlite_url, "--output-dir")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.endswith(" requires an argument.\n"), result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db", "home"]


def count_materials(url):
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        count = conn.exec_driver_sql("SELECT count(*) FROM materials").scalar_one()
    engine.dispose()
    return count


def test_demo_refuses_a_database_with_data(db_url):
    first = run("demo", "--db", db_url, "--materials", "10")
    assert first.exit_code == 0
    assert first.output == "demo data written: 10 materials\n"
    result = run("demo", "--db", db_url, "--materials", "12")
    assert result.exit_code == 2
    assert error_line(result) == (
        "Error: the database already holds data; use --force to replace the demo tables"
    )
    assert count_materials(db_url) == 10


def test_demo_with_force_replaces_data(db_url):
    assert run("demo", "--db", db_url, "--materials", "10").exit_code == 0
    execute(db_url, "DELETE FROM material_tags", "DELETE FROM materials WHERE id > 3")
    result = run("demo", "--db", db_url, "--materials", "12", "--force")
    assert result.exit_code == 0
    assert result.output == "demo data written: 12 materials\n"
    assert count_materials(db_url) == 12


def test_demo_twice_gives_identical_snapshots(db_url, other_url, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    assert run("demo", "--db", db_url, "--materials", "25").exit_code == 0
    exported(db_url, first, stamp=T1)
    assert run("demo", "--db", db_url, "--materials", "25", "--force").exit_code == 0
    assert export(db_url, first, stamp=T2).output == "no changes\n"
    assert run("demo", "--db", other_url, "--materials", "25").exit_code == 0
    exported(other_url, second, stamp=T1)
    assert tree(first) == tree(second)
    assert head(first) == head(second)
    assert subject(first) == (
        f"snapshot {T1}: material_tags +28 (new table); materials +25 (new table);"
        " sections +8 (new table); suppliers +8 (new table)"
    )


def test_the_worker_leaves_queued_jobs_to_the_caller_that_drains():
    worker = _Worker("beside")
    started, gate = threading.Event(), threading.Event()
    ran = []

    def first():
        started.set()
        gate.wait(10)
        ran.append(threading.current_thread().name)

    blocked = worker.submit(first)
    rest = [worker.submit(lambda: ran.append(threading.current_thread().name)) for _ in range(3)]
    assert started.wait(10)
    worker.drain()  # the worker is still on its first job: the caller runs the other three
    assert ran == ["MainThread"] * 3
    gate.set()
    blocked.result(timeout=10)
    worker.shutdown()
    assert ran == ["MainThread"] * 3 + ["beside"]
    assert all(future.done() for future in rest)


def test_a_failed_job_fails_its_future_and_shutdown_cancels_the_jobs_not_started():
    worker = _Worker("beside")
    failed = worker.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failed.result(timeout=10)
    started, gate = threading.Event(), threading.Event()

    def slow():
        started.set()
        return gate.wait(10)

    running = worker.submit(slow)
    queued = [worker.submit(print, "never") for _ in range(2)]
    assert started.wait(10)
    queued[-1].add_done_callback(lambda _: gate.set())  # once both are cancelled
    worker.shutdown()
    assert running.result() is True
    assert all(future.cancelled() for future in queued)
    assert not worker.thread.is_alive()


def test_ctrl_c_in_a_job_the_caller_runs_stops_the_drain_at_once():
    worker = _Worker("beside")
    started, gate = threading.Event(), threading.Event()
    worker.submit(lambda: started.set() or gate.wait(10))
    assert started.wait(10)

    def interrupted():
        raise KeyboardInterrupt

    stopped = worker.submit(interrupted)
    after = worker.submit(print, "never")
    with pytest.raises(KeyboardInterrupt):
        worker.drain()
    assert isinstance(stopped.exception(), KeyboardInterrupt)
    after.add_done_callback(lambda _: gate.set())
    worker.shutdown()
    assert after.cancelled()
