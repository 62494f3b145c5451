"""Reading the history back: `jsonsnap log`, `jsonsnap show`, naming a snapshot by date,
moment or revision (in any time zone), and `load_snapshot`.

Histories are made by real exports dated on several days; the ten-year history is a
real export followed by 3,649 commits of the same tree written with `git fast-import`.
Everything reads real git objects: hand edits of the work tree or of a commit are made
with git itself.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import os
import subprocess
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import engine_for, execute, git, head, run

from backend.errors import BadInput, SnapshotCorrupt
from backend.snapshot import list_snapshots, load_snapshot, resolve_snapshot

DAY1 = "2026-11-20T02:00:00Z"
DAY2 = "2026-11-21T02:00:00Z"
DAY3 = "2026-11-22T02:00:00Z"
EDITOR = ["-c", "user.name=Editor", "-c", "user.email=editor@example.org"]


@pytest.fixture(autouse=True)
def _utc(monkeypatch):
    """Dates are read in JSONSNAP_TZ; UTC unless a test says otherwise."""
    monkeypatch.setenv("JSONSNAP_TZ", "UTC")


def export(url: str, repo: Path, stamp: str) -> str:
    result = run("export", "--db", url, "--repo", str(repo), "--timestamp", stamp)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("committed "), result.output
    return head(repo)


def usage_error(result, message: str) -> None:
    """Exit 2, nothing on stdout, one line on stderr."""
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", f"Error: {message}\n")


def failure(result, message: str) -> None:
    """Exit 1, nothing on stdout, one line on stderr."""
    assert (result.exit_code, result.stdout, result.stderr) == (1, "", f"Error: {message}\n")


def is_pg(url: str) -> bool:
    return url.startswith("postgresql")


def live_rows(url: str, table: str) -> list[dict]:
    """The table as SQLAlchemy returns it, typed by reflection, in key order."""
    engine = engine_for(url)
    try:
        reflected = sa.Table(table, sa.MetaData(), autoload_with=engine)
        key = list(reflected.primary_key.columns)
        with engine.connect() as conn:
            result = conn.execute(sa.select(reflected).order_by(*key))
            return [dict(row) for row in result.mappings()]
    finally:
        engine.dispose()


def mismatches(loaded: list[dict], expected: list[dict]) -> dict:
    """(row id, column) -> (loaded, expected) wherever the value or its type differs."""
    assert [sorted(row) for row in loaded] == [sorted(row) for row in expected]
    return {
        (want["id"], name): (got[name], want[name])
        for got, want in zip(loaded, expected, strict=True)
        for name in want
        if got[name] != want[name] or type(got[name]) is not type(want[name])
    }


# ------------------------------------------------------------------ a history


def three_days(url: str, repo: Path) -> tuple[str, str, str]:
    """Day 1: two new tables. Day 2: materials +2 -1 ~3. Day 3: sections ~1."""
    execute(
        url,
        "CREATE TABLE sections (id integer PRIMARY KEY, label varchar(40) NOT NULL)",
        "CREATE TABLE materials (id integer PRIMARY KEY, label varchar(80) NOT NULL,"
        " section_id integer REFERENCES sections (id), unit_price numeric(12, 2))",
        "INSERT INTO sections VALUES (1, 'Plomberie'), (2, 'Électricité')",
        "INSERT INTO materials VALUES (1, 'Tuyau PER 16 mm', 1, 163.67),"
        " (2, 'Coude laiton', 1, 4.20), (3, 'Gaine ICTA', 2, 12.00), (4, 'Disjoncteur', 2, 9.99)",
    )
    first = export(url, repo, DAY1)
    execute(
        url,
        "INSERT INTO materials VALUES (5, 'Raccord', 1, 2.50), (6, 'Prise', 2, 3.10)",
        "DELETE FROM materials WHERE id = 1",
        "UPDATE materials SET unit_price = 18.90 WHERE id = 2",
        "UPDATE materials SET label = 'Gaine ICTA 20' WHERE id = 3",
        "UPDATE materials SET section_id = 1 WHERE id = 4",
    )
    second = export(url, repo, DAY2)
    execute(url, "UPDATE sections SET label = 'Électricité générale' WHERE id = 2")
    third = export(url, repo, DAY3)
    return first, second, third


# ------------------------------------------------------------------------- log


def test_log_lists_snapshots_newest_first_with_their_changes(sqlite_url, repo_path):
    first, second, third = three_days(sqlite_url, repo_path)
    result = run("log", "--repo", str(repo_path))
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [
        f"2026-11-22T02:00:00Z  {third[:10]}  sections ~1",
        f"2026-11-21T02:00:00Z  {second[:10]}  materials +2 -1 ~3",
        f"2026-11-20T02:00:00Z  {first[:10]}  materials +4 (new table); sections +2 (new table)",
    ]


def test_log_table_keeps_only_the_snapshots_that_changed_it(sqlite_url, repo_path):
    first, second, third = three_days(sqlite_url, repo_path)
    materials = run("log", "--repo", str(repo_path), "--table", "materials")
    assert (materials.exit_code, materials.stderr) == (0, "")
    assert materials.stdout.splitlines() == [
        f"2026-11-21T02:00:00Z  {second[:10]}  materials +2 -1 ~3",
        f"2026-11-20T02:00:00Z  {first[:10]}  materials +4 (new table); sections +2 (new table)",
    ]
    sections = run("log", "--repo", str(repo_path), "--table", "sections")
    assert sections.stdout.splitlines() == [
        f"2026-11-22T02:00:00Z  {third[:10]}  sections ~1",
        f"2026-11-20T02:00:00Z  {first[:10]}  materials +4 (new table); sections +2 (new table)",
    ]


def test_log_json_gives_commit_time_subject_and_summary(sqlite_url, repo_path):
    first, second, third = three_days(sqlite_url, repo_path)
    result = run("log", "--repo", str(repo_path), "--json")
    assert (result.exit_code, result.stderr) == (0, "")

    def change(added=0, deleted=0, changed=0, note=None):
        return {"added": added, "deleted": deleted, "changed": changed, "note": note}

    assert json.loads(result.stdout) == [
        {
            "commit": third,
            "time": DAY3,
            "subject": f"snapshot {DAY3}: sections ~1",
            "summary": {"sections": change(changed=1)},
        },
        {
            "commit": second,
            "time": DAY2,
            "subject": f"snapshot {DAY2}: materials +2 -1 ~3",
            "summary": {"materials": change(added=2, deleted=1, changed=3)},
        },
        {
            "commit": first,
            "time": DAY1,
            "subject": f"snapshot {DAY1}: materials +4 (new table); sections +2 (new table)",
            "summary": {
                "materials": change(added=4, note="new table"),
                "sections": change(added=2, note="new table"),
            },
        },
    ]
    table_only = run("log", "--repo", str(repo_path), "--json", "--table", "sections")
    assert [entry["commit"] for entry in json.loads(table_only.stdout)] == [third, first]


def test_list_snapshots_matches_log(sqlite_url, repo_path):
    first, second, third = three_days(sqlite_url, repo_path)
    infos = list_snapshots(repo_path)
    assert [(i.commit, i.time) for i in infos] == [
        (third, dt.datetime(2026, 11, 22, 2, tzinfo=dt.UTC)),
        (second, dt.datetime(2026, 11, 21, 2, tzinfo=dt.UTC)),
        (first, dt.datetime(2026, 11, 20, 2, tzinfo=dt.UTC)),
    ]
    assert [i.commit for i in list_snapshots(repo_path, table="materials")] == [second, first]


def test_log_of_a_missing_repository_exits_1(tmp_path):
    missing = tmp_path / "nowhere"
    failure(
        run("log", "--repo", str(missing)),
        f"{missing} is not a snapshot repository; run `jsonsnap init` first",
    )
    assert not missing.exists()


# ------------------------------------------------------------------------ show


def test_show_date_lists_tables_with_row_counts(sqlite_url, repo_path):
    _, second, _ = three_days(sqlite_url, repo_path)
    result = run("show", "--repo", str(repo_path), "--date", "2026-11-21")
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == (
        f"snapshot {second[:10]} 2026-11-21T02:00:00Z\n"
        "         5  materials\n"
        "         2  sections\n"
    )
    as_json = run("show", "--repo", str(repo_path), "--date", "2026-11-21", "--json")
    assert json.loads(as_json.stdout) == {
        "commit": second,
        "time": DAY2,
        "tables": {"materials": 5, "sections": 2},
    }


def test_show_commit_table_prints_one_compact_json_object_per_row(sqlite_url, repo_path):
    first, _, _ = three_days(sqlite_url, repo_path)
    result = run("show", "--repo", str(repo_path), "--commit", first[:7], "--table", "materials")
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == (
        '{"id":1,"label":"Tuyau PER 16 mm","section_id":1,"unit_price":"163.67"}\n'
        '{"id":2,"label":"Coude laiton","section_id":1,"unit_price":"4.20"}\n'
        '{"id":3,"label":"Gaine ICTA","section_id":2,"unit_price":"12.00"}\n'
        '{"id":4,"label":"Disjoncteur","section_id":2,"unit_price":"9.99"}\n'
    )


def test_show_table_json_is_one_array(sqlite_url, repo_path):
    three_days(sqlite_url, repo_path)
    result = run("show", "--repo", str(repo_path), "--commit", "HEAD", "--table", "sections")
    assert result.stdout == (
        '{"id":1,"label":"Plomberie"}\n{"id":2,"label":"Électricité générale"}\n'
    )
    as_json = run(
        "show", "--repo", str(repo_path), "--commit", "HEAD", "--table", "sections", "--json"
    )
    assert (as_json.exit_code, as_json.stderr) == (0, "")
    assert as_json.stdout == (
        "[\n"
        "  {\n"
        '    "id": 1,\n'
        '    "label": "Plomberie"\n'
        "  },\n"
        "  {\n"
        '    "id": 2,\n'
        '    "label": "Électricité générale"\n'
        "  }\n"
        "]\n"
    )


def test_show_json_keeps_the_exact_digits_of_json_numbers(sqlite_url, repo_path):
    execute(
        sqlite_url,
        "CREATE TABLE docs (id integer PRIMARY KEY, doc json)",
        """INSERT INTO docs VALUES (1, '{"price": 12.50, "big": 1234567890123456789012345}')""",
    )
    export(sqlite_url, repo_path, DAY1)
    lines = run("show", "--repo", str(repo_path), "--commit", "HEAD", "--table", "docs")
    assert lines.stdout == '{"doc":{"big":1234567890123456789012345,"price":12.50},"id":1}\n'
    as_json = run("show", "--repo", str(repo_path), "--commit", "HEAD", "--table", "docs", "--json")
    assert as_json.stdout == (
        "[\n"
        "  {\n"
        '    "doc": {\n'
        '      "big": 1234567890123456789012345,\n'
        '      "price": 12.50\n'
        "    },\n"
        '    "id": 1\n'
        "  }\n"
        "]\n"
    )


def test_show_empty_table_prints_no_rows(sqlite_url, repo_path):
    execute(
        sqlite_url,
        "CREATE TABLE empty (id integer PRIMARY KEY)",
        "CREATE TABLE full (id integer PRIMARY KEY)",
        "INSERT INTO full VALUES (1)",
    )
    export(sqlite_url, repo_path, DAY1)
    listing = run("show", "--repo", str(repo_path), "--commit", "HEAD")
    assert listing.stdout.splitlines()[1:] == ["         0  empty", "         1  full"]
    result = run("show", "--repo", str(repo_path), "--commit", "HEAD", "--table", "empty")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
    as_json = run(
        "show", "--repo", str(repo_path), "--commit", "HEAD", "--table", "empty", "--json"
    )
    assert (as_json.exit_code, as_json.stdout) == (0, "[]\n")
    assert load_snapshot(repo_path, tables=["empty"]) == {"empty": []}


@pytest.mark.parametrize(
    "options",
    [
        ("--date", "2026-11-21", "--commit", "HEAD"),
        (),
        ("--table", "materials"),
    ],
)
def test_show_needs_exactly_one_of_date_and_commit(options, sqlite_url, repo_path):
    three_days(sqlite_url, repo_path)
    usage_error(
        run("show", "--repo", str(repo_path), *options), "give exactly one of --date and --commit"
    )


def test_show_unknown_table_exits_2_naming_the_tables(sqlite_url, repo_path):
    _, _, third = three_days(sqlite_url, repo_path)
    usage_error(
        run("show", "--repo", str(repo_path), "--commit", "HEAD", "--table", "nope"),
        f"unknown table 'nope' in snapshot {third[:10]} (tables: materials, sections)",
    )


# --------------------------------------------------------- naming a snapshot


def four_moments(url: str, repo: Path) -> list[str]:
    """Snapshots at 2026-11-20 02:00, 2026-11-20 14:00 and 2026-11-21 02:00 UTC, each a change."""
    execute(url, "CREATE TABLE t (id integer PRIMARY KEY)")
    commits = []
    for number, stamp in enumerate(
        ["2026-11-20T02:00:00Z", "2026-11-20T14:00:00Z", "2026-11-21T02:00:00Z"], start=1
    ):
        execute(url, f"INSERT INTO t VALUES ({number})")
        commits.append(export(url, repo, stamp))
    return commits


def resolved(repo: Path, at: str) -> str:
    return resolve_snapshot(repo, at).commit


def test_a_date_names_the_last_snapshot_at_or_before_the_end_of_that_day(sqlite_url, repo_path):
    _, b, c = four_moments(sqlite_url, repo_path)
    assert resolved(repo_path, "2026-11-20") == b
    assert resolved(repo_path, "2026-11-21") == c
    assert resolved(repo_path, "2027-01-01") == c
    assert resolve_snapshot(repo_path, "2026-11-20").time == dt.datetime(
        2026, 11, 20, 14, tzinfo=dt.UTC
    )
    assert load_snapshot(repo_path, "2026-11-20") == {"t": [{"id": 1}, {"id": 2}]}


def test_an_iso_time_names_the_last_snapshot_at_or_before_it(sqlite_url, repo_path):
    a, b, c = four_moments(sqlite_url, repo_path)
    assert resolved(repo_path, "2026-11-20T02:00:00Z") == a
    assert resolved(repo_path, "2026-11-20T13:59:59Z") == a
    assert resolved(repo_path, "2026-11-20T14:00:00Z") == b
    assert resolved(repo_path, "2026-11-20T15:00:00+01:00") == b
    assert resolved(repo_path, "2026-11-20T14:59:59+01:00") == a
    assert resolved(repo_path, "2026-11-21T01:59:59") == b  # no offset: JSONSNAP_TZ (UTC)
    assert resolved(repo_path, "2026-11-21 02:00:00Z") == c


def test_a_revision_names_that_commit(sqlite_url, repo_path):
    a, b, c = four_moments(sqlite_url, repo_path)
    assert resolved(repo_path, "HEAD") == c
    assert resolved(repo_path, "HEAD~1") == b
    assert resolved(repo_path, "HEAD~2") == a
    assert resolved(repo_path, a[:7]) == a
    assert resolved(repo_path, b) == b
    assert resolved(repo_path, "main~1") == b
    result = run("show", "--repo", str(repo_path), "--commit", "HEAD~1")
    assert result.stdout == f"snapshot {b[:10]} 2026-11-20T14:00:00Z\n         2  t\n"
    by_date = run("show", "--repo", str(repo_path), "--date", "2026-11-20T13:00:00Z")
    assert by_date.stdout == f"snapshot {a[:10]} 2026-11-20T02:00:00Z\n         1  t\n"


def zoned_history(url: str, repo: Path) -> dict[str, str]:
    """Snapshots placed around the day boundaries of UTC, New York and Tokyo."""
    moments = {
        "A": "2026-11-20T02:00:00Z",  # NY 11-19 21:00, Tokyo 11-20 11:00
        "B": "2026-11-20T15:00:00Z",  # NY 11-20 10:00, Tokyo 11-21 00:00
        "C": "2026-11-21T03:00:00Z",  # NY 11-20 22:00, Tokyo 11-21 12:00
        "D": "2026-11-21T04:59:59Z",  # NY 11-20 23:59:59
        "E": "2026-11-21T05:00:00Z",  # NY 11-21 00:00
    }
    execute(url, "CREATE TABLE t (id integer PRIMARY KEY)")
    commits = {}
    for number, (name, stamp) in enumerate(moments.items(), start=1):
        execute(url, f"INSERT INTO t VALUES ({number})")
        commits[name] = export(url, repo, stamp)
    return commits


def test_dates_follow_jsonsnap_tz_new_york(sqlite_url, repo_path, monkeypatch):
    c = zoned_history(sqlite_url, repo_path)
    monkeypatch.setenv("JSONSNAP_TZ", "America/New_York")
    # 2026-11-21T03:00Z and 04:59:59Z are still 2026-11-20 in New York; 05:00Z is not.
    assert resolved(repo_path, "2026-11-20") == c["D"]
    assert resolved(repo_path, "2026-11-19") == c["A"]
    assert resolved(repo_path, "2026-11-21") == c["E"]
    assert resolved(repo_path, "2026-11-20T23:00:00") == c["C"]  # local time, no offset
    assert resolved(repo_path, "2026-11-20T23:59:59") == c["D"]
    result = run("show", "--repo", str(repo_path), "--date", "2026-11-20")
    assert result.stdout.splitlines()[0] == f"snapshot {c['D'][:10]} 2026-11-21T04:59:59Z"


def test_dates_follow_jsonsnap_tz_utc(sqlite_url, repo_path):
    c = zoned_history(sqlite_url, repo_path)
    assert resolved(repo_path, "2026-11-20") == c["B"]
    assert resolved(repo_path, "2026-11-21") == c["E"]


def test_dates_follow_jsonsnap_tz_tokyo(sqlite_url, repo_path, monkeypatch):
    c = zoned_history(sqlite_url, repo_path)
    monkeypatch.setenv("JSONSNAP_TZ", "Asia/Tokyo")
    # 2026-11-20T15:00Z is already 2026-11-21 in Tokyo.
    assert resolved(repo_path, "2026-11-20") == c["A"]
    assert resolved(repo_path, "2026-11-21") == c["E"]
    assert resolved(repo_path, "2026-11-21T00:00:00") == c["B"]
    assert resolved(repo_path, "2026-11-20T23:59:59") == c["A"]
    result = run("show", "--repo", str(repo_path), "--date", "2026-11-19")
    usage_error(
        result, "no snapshot on or before 2026-11-19; the first is 2026-11-20T11:00:00+09:00"
    )


def test_unknown_time_zone_exits_2(sqlite_url, repo_path, monkeypatch):
    four_moments(sqlite_url, repo_path)
    monkeypatch.setenv("JSONSNAP_TZ", "Mars/Olympus_Mons")
    usage_error(
        run("show", "--repo", str(repo_path), "--date", "2026-11-20"),
        "JSONSNAP_TZ='Mars/Olympus_Mons' is not a known time zone",
    )


@pytest.mark.parametrize("at", ["2026-11-01", "2026-11-20T01:59:59Z"])
def test_a_moment_before_the_first_snapshot_exits_2_naming_the_first(at, sqlite_url, repo_path):
    four_moments(sqlite_url, repo_path)
    message = f"no snapshot on or before {at}; the first is 2026-11-20T02:00:00+00:00"
    usage_error(run("show", "--repo", str(repo_path), "--date", at), message)
    with pytest.raises(BadInput) as caught:
        resolve_snapshot(repo_path, at)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--date", "2026-13-01", "invalid date '2026-13-01': use YYYY-MM-DD"),
        ("--date", "2026-02-30", "invalid date '2026-02-30': use YYYY-MM-DD"),
        (
            "--date",
            "2026-11-20T25:00:00Z",
            "invalid timestamp '2026-11-20T25:00:00Z': use ISO 8601, e.g. 2026-11-28T02:00:00Z",
        ),
        (
            "--commit",
            "deadbeef",
            "no snapshot named 'deadbeef': give a date (YYYY-MM-DD), an ISO 8601 time, or a commit",
        ),
        (
            "--commit",
            "HEAD~7",
            "no snapshot named 'HEAD~7': give a date (YYYY-MM-DD), an ISO 8601 time, or a commit",
        ),
        (
            "--date",
            "yesterday",
            "no snapshot named 'yesterday': give a date (YYYY-MM-DD), an ISO 8601 time, "
            "or a commit",
        ),
        (
            "--commit",
            "--all",
            "no snapshot named '--all': give a date (YYYY-MM-DD), an ISO 8601 time, or a commit",
        ),
    ],
)
def test_malformed_dates_and_unknown_revisions_exit_2_with_one_line(
    option, value, message, sqlite_url, repo_path
):
    four_moments(sqlite_url, repo_path)
    usage_error(run("show", "--repo", str(repo_path), f"{option}={value}"), message)


def test_a_commit_without_a_snapshot_exits_2(sqlite_url, repo_path):
    four_moments(sqlite_url, repo_path)
    empty_tree = git(repo_path, "hash-object", "-t", "tree", "-w", "--stdin").strip()
    stray = subprocess.run(
        ["git", "-C", str(repo_path), *EDITOR, "commit-tree", empty_tree, "-m", "stray"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    usage_error(
        run("show", "--repo", str(repo_path), "--commit", stray),
        f"{stray!r} names commit {stray[:10]}, which holds no snapshot",
    )


def test_show_before_any_snapshot_exits_2(repo_path):
    assert run("init", "--repo", str(repo_path)).exit_code == 0
    usage_error(
        run("show", "--repo", str(repo_path), "--commit", "HEAD"),
        f"no snapshot yet in {repo_path}",
    )


# --------------------------------------------------------------- load_snapshot


def typed_table(url: str) -> None:
    if is_pg(url):
        execute(
            url,
            "CREATE TABLE typed (id integer PRIMARY KEY, price numeric(12, 2), ratio double"
            " precision, ok boolean, born date, at_tz timestamptz, at timestamp, t time,"
            " span interval, raw bytea, ident uuid, doc jsonb, doc2 json, tags text[],"
            " nums integer[], label varchar(40), note text, big bigint)",
            "INSERT INTO typed VALUES (1, 163.67, 0.1, true, '2026-12-01',"
            " '2026-11-19 23:30:00.123456+01', '2026-11-19 10:00:00', '12:34:56.789',"
            " '3 days 04:05:06.5', '\\x00ff0a', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',"
            """ '{"couleur": "rouge", "poids": 12.50, "big": 1234567890123456789012345}',"""
            """ '{"a": [1, 2.5, null]}', ARRAY['a,b', 'c"d'], ARRAY[1, NULL, 3],"""
            " 'Tuyau PER', E'deux\\nlignes', 9007199254740993)",
            "INSERT INTO typed VALUES (2, -0.01, 'Infinity', false, '1999-12-31',"
            " '2000-01-01 00:00:00+00', '2000-01-01 00:00:00', '00:00:00', '-00:00:01',"
            " '\\x', '00000000-0000-0000-0000-000000000000', '[]', 'null', '{}', '{}', '', '',"
            " -1)",
            "INSERT INTO typed (id) VALUES (3)",
        )
        return
    execute(
        url,
        "CREATE TABLE typed (id integer PRIMARY KEY, price numeric(12, 2), ratio real,"
        " ok boolean, born date, at datetime, t time, raw blob, doc json, label varchar(40),"
        " note text, big bigint)",
        "INSERT INTO typed VALUES (1, '163.67', 0.1, 1, '2026-12-01', '2026-11-19 10:00:00.000000',"
        " '12:34:56.789000', x'00ff0a',"
        """ '{"couleur": "rouge", "poids": 12.50, "big": 1234567890123456789012345}',"""
        " 'Tuyau PER', 'deux' || char(10) || 'lignes', 9007199254740993)",
        "INSERT INTO typed VALUES (2, '-0.01', 1e999, 0, '1999-12-31',"
        " '2000-01-01 00:00:00.000000', '00:00:00.000000', x'', '[]', '', '', -1)",
        "INSERT INTO typed (id) VALUES (3)",
    )


def test_load_snapshot_returns_the_types_sqlalchemy_returns(db_url, repo_path):
    typed_table(db_url)
    export(db_url, repo_path, DAY1)
    expected = live_rows(db_url, "typed")
    execute(
        db_url,
        "UPDATE typed SET price = 1, label = 'autre' WHERE id = 1",
        "DELETE FROM typed WHERE id = 2",
    )
    export(db_url, repo_path, DAY2)
    loaded = load_snapshot(repo_path, at="2026-11-20", tables=["typed"])
    assert list(loaded) == ["typed"]
    assert mismatches(loaded["typed"], expected) == {}
    first = loaded["typed"][0]
    assert first["price"] == Decimal("163.67")
    assert isinstance(first["born"], dt.date)
    assert first["doc"]["poids"] == 12.5
    assert first["doc"]["big"] == 1234567890123456789012345
    assert first["raw"] == b"\x00\xff\x0a"
    if is_pg(db_url):
        assert first["at_tz"] == dt.datetime(2026, 11, 19, 22, 30, 0, 123456, tzinfo=dt.UTC)
        assert first["span"] == dt.timedelta(days=3, hours=4, minutes=5, seconds=6.5)
        assert first["ident"] == uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
        assert first["nums"] == [1, None, 3]
    # The newest snapshot, and every table by default.
    assert mismatches(load_snapshot(repo_path)["typed"], live_rows(db_url, "typed")) == {}


def test_load_snapshot_reads_git_objects_not_the_work_tree(sqlite_url, repo_path):
    first, _, _ = three_days(sqlite_url, repo_path)
    committed_day1 = load_snapshot(repo_path, at=first)
    committed_head = load_snapshot(repo_path)
    (repo_path / "tables" / "materials.json").unlink()
    (repo_path / "tables" / "sections.json").write_text("[]\n")
    (repo_path / "manifest.json").write_text("not a manifest\n")
    assert load_snapshot(repo_path, at=first) == committed_day1
    assert load_snapshot(repo_path) == committed_head
    assert load_snapshot(repo_path, at="2026-11-21", tables=["materials"]) == {
        "materials": [
            {"id": 2, "label": "Coude laiton", "section_id": 1, "unit_price": Decimal("18.90")},
            {"id": 3, "label": "Gaine ICTA 20", "section_id": 2, "unit_price": Decimal("12.00")},
            {"id": 4, "label": "Disjoncteur", "section_id": 1, "unit_price": Decimal("9.99")},
            {"id": 5, "label": "Raccord", "section_id": 1, "unit_price": Decimal("2.50")},
            {"id": 6, "label": "Prise", "section_id": 2, "unit_price": Decimal("3.10")},
        ]
    }
    shown = run("show", "--repo", str(repo_path), "--commit", "HEAD", "--table", "sections")
    assert shown.stdout == '{"id":1,"label":"Plomberie"}\n{"id":2,"label":"Électricité générale"}\n'


def test_load_snapshot_unknown_table_is_bad_input(sqlite_url, repo_path):
    _, _, third = three_days(sqlite_url, repo_path)
    with pytest.raises(BadInput) as caught:
        load_snapshot(repo_path, tables=["nope"])
    assert str(caught.value) == (
        f"unknown table 'nope' in snapshot {third[:10]} (tables: materials, sections)"
    )


def git_children() -> list[str]:
    """This process's child git processes that are still running (GitPython's helpers)."""
    listing = subprocess.run(
        ["ps", "-o", "args=", "--ppid", str(os.getpid())],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return sorted(line for line in listing.splitlines() if line.startswith("git "))


def test_reading_snapshots_leaves_no_git_process_running(sqlite_url, repo_path):
    three_days(sqlite_url, repo_path)
    gc.collect()
    before = git_children()
    for at in ("2026-11-20", "HEAD~1", "HEAD"):
        assert len(load_snapshot(repo_path, at=at)["sections"]) == 2
    assert len(list_snapshots(repo_path)) == 3
    shown = run("show", "--repo", str(repo_path), "--commit", "HEAD", "--table", "sections")
    assert shown.exit_code == 0
    # A server calls these for every request: each must release what it started.
    assert git_children() == before


# ------------------------------------------------------- a hand-edited snapshot


def rows_of(url: str, table: str) -> list[tuple]:
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY 1")]
    finally:
        engine.dispose()


def test_hand_edited_snapshot_fails_its_checksum_everywhere(db_url, repo_path):
    first, _, _ = three_days(db_url, repo_path)
    data = repo_path / "tables" / "sections.json"
    data.write_text(data.read_text().replace("Plomberie", "Plomberie (edited)"))
    git(repo_path, *EDITOR, "commit", "-q", "-am", "hand edit")
    edited = head(repo_path)
    message = (
        f"tables/sections.json in snapshot {edited[:10]} does not match its checksum in "
        "manifest.json: the snapshot was edited or damaged"
    )
    before = {name: rows_of(db_url, name) for name in ("materials", "sections")}

    with pytest.raises(SnapshotCorrupt) as caught:
        load_snapshot(repo_path, tables=["sections"])
    assert str(caught.value) == message
    failure(
        run("show", "--repo", str(repo_path), "--commit", "HEAD", "--table", "sections"), message
    )
    restore = run("restore", "--db", db_url, "--repo", str(repo_path), "--commit", "HEAD", "--yes")
    failure(restore, message)

    assert {name: rows_of(db_url, name) for name in ("materials", "sections")} == before
    assert head(repo_path) == edited
    assert git(repo_path, "rev-list", "--count", "HEAD") == "4\n"
    # The tables the edit did not touch still read, and so do older snapshots.
    assert len(load_snapshot(repo_path, tables=["materials"])["materials"]) == 5
    assert load_snapshot(repo_path, at=first, tables=["sections"]) == {
        "sections": [{"id": 1, "label": "Plomberie"}, {"id": 2, "label": "Électricité"}]
    }


# ------------------------------------------------------- ten years, day by day


def test_dates_resolve_across_3650_daily_snapshots(sqlite_url, repo_path):
    execute(
        sqlite_url,
        "CREATE TABLE t (id integer PRIMARY KEY, v text)",
        "INSERT INTO t VALUES (1, 'a')",
    )
    start = dt.datetime(2016, 1, 1, 2, tzinfo=dt.UTC)
    first = export(sqlite_url, repo_path, "2016-01-01T02:00:00Z")
    days = 3650
    stream = []
    for day in range(1, days):
        when = start + dt.timedelta(days=day)
        message = f"snapshot {when:%Y-%m-%dT%H:%M:%SZ}: no row changes\n".encode()
        stream += [
            b"commit refs/heads/main\n",
            f"committer jsonsnap <jsonsnap@localhost> {int(when.timestamp())} +0000\n".encode(),
            b"data %d\n" % len(message),
            message,
            f"from {first}\n".encode() if day == 1 else b"",
            b"\n",
        ]
    subprocess.run(
        ["git", "-C", str(repo_path), "fast-import", "--quiet"],
        input=b"".join(stream),
        check=True,
    )
    assert git(repo_path, "rev-list", "--count", "HEAD") == f"{days}\n"
    last = start + dt.timedelta(days=days - 1)
    assert last.date() == dt.date(2025, 12, 28)

    def commit_of(day: dt.date) -> str:
        """Independently of the resolver: the chain is linear, one commit a day."""
        back = (last.date() - day).days
        return git(repo_path, "rev-parse", f"HEAD~{back}").strip()

    assert resolved(repo_path, "2016-01-01") == first
    for day in (dt.date(2016, 1, 2), dt.date(2020, 2, 29), dt.date(2023, 7, 14)):
        snapshot = resolve_snapshot(repo_path, day.isoformat())
        assert snapshot.commit == commit_of(day)
        assert snapshot.time == dt.datetime.combine(day, dt.time(2), dt.UTC)
    assert resolved(repo_path, "2025-12-28") == head(repo_path)
    assert resolved(repo_path, "2030-01-01") == head(repo_path)
    assert resolved(repo_path, "2021-06-15T01:59:59Z") == commit_of(dt.date(2021, 6, 14))
    assert resolved(repo_path, "2021-06-15T02:00:00Z") == commit_of(dt.date(2021, 6, 15))
    usage_error(
        run("show", "--repo", str(repo_path), "--date", "2015-12-31"),
        "no snapshot on or before 2015-12-31; the first is 2016-01-01T02:00:00+00:00",
    )
    shown = run("show", "--repo", str(repo_path), "--date", "2019-03-05")
    assert shown.stdout == (
        f"snapshot {commit_of(dt.date(2019, 3, 5))[:10]} 2019-03-05T02:00:00Z\n         1  t\n"
    )
    assert load_snapshot(repo_path, at="2018-08-08") == {"t": [{"id": 1, "v": "a"}]}
    assert len(list_snapshots(repo_path)) == days


def test_commits_pack_the_repository_when_git_says_it_is_time(sqlite_url, repo_path):
    # Plumbing commits never trigger git's automatic gc; export runs it itself.
    # Two packs against gc.autoPackLimit=1 make it due, whatever the sampling.
    execute(sqlite_url, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    for value in ("a", "b", "c"):
        execute(sqlite_url, "DELETE FROM t", f"INSERT INTO t VALUES (1, '{value}')")
        assert run("export", "--db", sqlite_url, "--repo", str(repo_path)).exit_code == 0
        if value != "c":
            git(repo_path, "repack", "-d", "-q")
            git(repo_path, "config", "gc.autoPackLimit", "0")  # off: exports so far
    git(repo_path, "config", "gc.autoPackLimit", "1")
    execute(sqlite_url, "UPDATE t SET v = 'd'")
    assert run("export", "--db", sqlite_url, "--repo", str(repo_path)).exit_code == 0
    counts = dict(line.split(": ") for line in git(repo_path, "count-objects", "-v").splitlines())
    assert (counts["count"], counts["packs"]) == ("0", "1")
    assert git(repo_path, "status", "--porcelain") == ""
    assert git(repo_path, "rev-list", "--count", "HEAD") == "4\n"
