"""`jsonsnap diff FROM [TO]`: row-level differences by primary key, between snapshots or
against the live database (`db`), in human form and as JSON.

Real exports on real SQLite files and PostgreSQL databases; rows are moved physically
with DELETE + INSERT, UPDATE, CLUSTER and VACUUM FULL to check that only values count.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import execute, head, run

from backend.errors import BadInput
from backend.snapshot import diff_snapshots

DAY1 = "2026-11-20T02:00:00Z"
DAY2 = "2026-11-21T02:00:00Z"
DAY3 = "2026-11-22T02:00:00Z"


@pytest.fixture(autouse=True)
def _utc(monkeypatch):
    monkeypatch.setenv("JSONSNAP_TZ", "UTC")


def is_pg(url: str) -> bool:
    return url.startswith("postgresql")


def export(url: str, repo: Path, stamp: str, *options: str) -> str:
    result = run("export", "--db", url, "--repo", str(repo), "--timestamp", stamp, *options)
    assert result.exit_code == 0, result.output
    return result.stdout


def diff(url: str, repo: Path, *args: str) -> list[str]:
    result = run("diff", "--db", url, "--repo", str(repo), *args)
    assert (result.exit_code, result.stderr) == (0, ""), result.output
    return result.stdout.splitlines()


def diff_json(url: str, repo: Path, *args: str) -> dict:
    result = run("diff", "--db", url, "--repo", str(repo), "--json", *args)
    assert (result.exit_code, result.stderr) == (0, ""), result.output
    return json.loads(result.stdout)


def usage_error(result, message: str) -> None:
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", f"Error: {message}\n")


def materials(url: str) -> None:
    doc = "jsonb" if is_pg(url) else "json"
    execute(
        url,
        "CREATE TABLE sections (id integer PRIMARY KEY, label varchar(40) NOT NULL)",
        "CREATE TABLE materials (id integer PRIMARY KEY, label varchar(80) NOT NULL,"
        f" unit_price numeric(12, 2), attributes {doc})",
        "INSERT INTO sections VALUES (1, 'Plomberie'), (2, 'Électricité')",
        "INSERT INTO materials VALUES"
        """ (1, 'Tuyau PER', 10.00, '{"couleur": "rouge", "dimensions": [16, 20]}'),"""
        """ (2, 'Coude', 4.20, '{"couleur": "jaune"}'),"""
        " (3, 'Gaine', 12.00, '{}'),"
        """ (12, 'Prise', 163.67, '{"couleur": "blanc"}')""",
    )


def two_days(url: str, repo: Path) -> tuple[str, str]:
    materials(url)
    export(url, repo, DAY1)
    first = head(repo)
    execute(
        url,
        "INSERT INTO materials VALUES (13, 'Interrupteur', 5.00, '{}'),"
        " (14, 'Fusible', 0.80, NULL)",
        "DELETE FROM materials WHERE id = 2",
        "UPDATE materials SET unit_price = 18.90 WHERE id = 12",
        """UPDATE materials SET attributes = '{"couleur": "bleu", "dimensions": [16, 25]}'"""
        " WHERE id = 1",
        """UPDATE materials SET label = 'Gaine ICTA', attributes = '{"poids": 12.50}'"""
        " WHERE id = 3",
    )
    export(url, repo, DAY2)
    return first, head(repo)


DAY2_LINES = [
    "materials: +2 -1 ~3",
    "  + id=13",
    "  + id=14",
    "  - id=2",
    '  ~ id=1: attributes.couleur "rouge" → "bleu", attributes.dimensions.1 20 → 25',
    '  ~ id=3: attributes.poids null → 12.50, label "Gaine" → "Gaine ICTA"',
    '  ~ id=12: unit_price "163.67" → "18.90"',
]


# ------------------------------------------------------------ two snapshots


def test_diff_between_two_snapshots_in_human_form(db_url, repo_path):
    first, second = two_days(db_url, repo_path)
    assert diff(db_url, repo_path, "2026-11-20", "2026-11-21") == [
        f"from {first[:10]} (2026-11-20T02:00:00Z) to {second[:10]} (2026-11-21T02:00:00Z)",
        *DAY2_LINES,
    ]


def test_diff_to_defaults_to_the_newest_snapshot(sqlite_url, repo_path):
    first, second = two_days(sqlite_url, repo_path)
    assert diff(sqlite_url, repo_path, first[:8]) == [
        f"from {first[:10]} (2026-11-20T02:00:00Z) to {second[:10]} (2026-11-21T02:00:00Z)",
        *DAY2_LINES,
    ]


def test_diff_backwards_swaps_added_and_removed_and_old_and_new(sqlite_url, repo_path):
    first, second = two_days(sqlite_url, repo_path)
    assert diff(sqlite_url, repo_path, "HEAD", "HEAD~1") == [
        f"from {second[:10]} (2026-11-21T02:00:00Z) to {first[:10]} (2026-11-20T02:00:00Z)",
        "materials: +1 -2 ~3",
        "  + id=2",
        "  - id=13",
        "  - id=14",
        '  ~ id=1: attributes.couleur "bleu" → "rouge", attributes.dimensions.1 25 → 20',
        '  ~ id=3: attributes.poids 12.50 → null, label "Gaine ICTA" → "Gaine"',
        '  ~ id=12: unit_price "18.90" → "163.67"',
    ]


def test_diff_json_structure(db_url, repo_path):
    first, second = two_days(db_url, repo_path)
    assert diff_json(db_url, repo_path, "HEAD~1", "HEAD") == {
        "from": f"{first[:10]} (2026-11-20T02:00:00Z)",
        "to": f"{second[:10]} (2026-11-21T02:00:00Z)",
        "tables": {
            "materials": {
                "added": [{"id": 13}, {"id": 14}],
                "removed": [{"id": 2}],
                "changed": [
                    {
                        "key": {"id": 1},
                        "changes": {
                            "attributes.couleur": {"old": "rouge", "new": "bleu"},
                            "attributes.dimensions.1": {"old": 20, "new": 25},
                        },
                    },
                    {
                        "key": {"id": 3},
                        "changes": {
                            "attributes.poids": {"old": None, "new": 12.5},
                            "label": {"old": "Gaine", "new": "Gaine ICTA"},
                        },
                    },
                    {
                        "key": {"id": 12},
                        "changes": {"unit_price": {"old": "163.67", "new": "18.90"}},
                    },
                ],
            }
        },
    }
    raw = run("diff", "--repo", str(repo_path), "--json", "HEAD~1", "HEAD").stdout
    assert '"new": 12.50' in raw  # the JSON number's own digits


def test_diff_of_identical_snapshots_prints_no_differences(sqlite_url, repo_path):
    first, _ = two_days(sqlite_url, repo_path)
    assert diff(sqlite_url, repo_path, "HEAD~1", first) == [
        f"from {first[:10]} (2026-11-20T02:00:00Z) to {first[:10]} (2026-11-20T02:00:00Z)",
        "no differences",
    ]
    assert diff_json(sqlite_url, repo_path, first, first)["tables"] == {}


def test_diff_table_keeps_only_that_table(sqlite_url, repo_path):
    first, second = two_days(sqlite_url, repo_path)
    execute(sqlite_url, "UPDATE sections SET label = 'Plomberie sanitaire' WHERE id = 1")
    export(sqlite_url, repo_path, DAY3)
    third = head(repo_path)
    assert diff(sqlite_url, repo_path, first, third)[1:] == [
        *DAY2_LINES,
        "sections: ~1",
        '  ~ id=1: label "Plomberie" → "Plomberie sanitaire"',
    ]
    assert diff(sqlite_url, repo_path, first, third, "--table", "sections")[1:] == [
        "sections: ~1",
        '  ~ id=1: label "Plomberie" → "Plomberie sanitaire"',
    ]
    assert diff(sqlite_url, repo_path, first, second, "--table", "sections") == [
        f"from {first[:10]} (2026-11-20T02:00:00Z) to {second[:10]} (2026-11-21T02:00:00Z)",
        "no differences",
    ]
    only = diff_json(sqlite_url, repo_path, first, third, "--table", "materials")
    assert list(only["tables"]) == ["materials"]


def test_diff_unknown_table_exits_2(sqlite_url, repo_path):
    two_days(sqlite_url, repo_path)
    usage_error(
        run("diff", "--repo", str(repo_path), "HEAD~1", "HEAD", "--table", "nope"),
        "unknown table 'nope' (tables: materials, sections)",
    )
    usage_error(
        run("diff", "--db", sqlite_url, "--repo", str(repo_path), "HEAD", "db", "--table", "nope"),
        "unknown table 'nope' (tables: materials, sections)",
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("nope", "HEAD"),
            "no snapshot named 'nope': give a date (YYYY-MM-DD), an ISO 8601 time, or a commit",
        ),
        (("2026-02-30",), "invalid date '2026-02-30': use YYYY-MM-DD"),
        (
            ("2026-11-01",),
            "no snapshot on or before 2026-11-01; the first is 2026-11-20T02:00:00+00:00",
        ),
        (("HEAD", "2026-13-01"), "invalid date '2026-13-01': use YYYY-MM-DD"),
    ],
)
def test_diff_bad_sides_exit_2(args, message, sqlite_url, repo_path):
    two_days(sqlite_url, repo_path)
    usage_error(run("diff", "--repo", str(repo_path), *args), message)


def test_diff_with_db_needs_an_engine(sqlite_url, repo_path):
    two_days(sqlite_url, repo_path)
    with pytest.raises(BadInput) as caught:
        diff_snapshots(repo_path, "HEAD", "db")
    assert str(caught.value) == "comparing with 'db' needs a database"


def test_diff_shows_a_table_that_appeared_or_disappeared(sqlite_url, repo_path):
    first, _ = two_days(sqlite_url, repo_path)
    execute(
        sqlite_url,
        "CREATE TABLE codes (code varchar(10) PRIMARY KEY, label text)",
        "INSERT INTO codes VALUES ('b', 'bee'), ('a b', 'space')",
        "DROP TABLE sections",
    )
    export(sqlite_url, repo_path, DAY3)
    assert diff(sqlite_url, repo_path, "HEAD~1", "HEAD")[1:] == [
        "codes: +2",
        '  + code="a b"',
        '  + code="b"',
        "sections: -2",
        "  - id=1",
        "  - id=2",
    ]
    assert diff(sqlite_url, repo_path, first, "HEAD", "--table", "codes")[1:] == [
        "codes: +2",
        '  + code="a b"',
        '  + code="b"',
    ]


def test_diff_composite_keys_name_every_key_column(db_url, repo_path):
    execute(
        db_url,
        "CREATE TABLE material_tags (material_id integer, tag varchar(20), weight integer,"
        " PRIMARY KEY (material_id, tag))",
        "INSERT INTO material_tags VALUES (1, 'cuivre', 1), (1, 'eau', 2), (2, 'eau', 3)",
    )
    export(db_url, repo_path, DAY1)
    execute(
        db_url,
        "DELETE FROM material_tags WHERE material_id = 1 AND tag = 'eau'",
        "INSERT INTO material_tags VALUES (2, 'cuivre', 4)",
        "UPDATE material_tags SET weight = 30 WHERE material_id = 2 AND tag = 'eau'",
    )
    assert diff(db_url, repo_path, "HEAD", "db")[1:] == [
        "material_tags: +1 -1 ~1",
        '  + material_id=2, tag="cuivre"',
        '  - material_id=1, tag="eau"',
        '  ~ material_id=2, tag="eau": weight 3 → 30',
    ]


# ------------------------------------------------------------ the live database


def test_diff_head_db_on_an_unchanged_database_prints_no_differences(db_url, repo_path):
    _, second = two_days(db_url, repo_path)
    assert diff(db_url, repo_path, "HEAD", "db") == [
        f"from {second[:10]} (2026-11-21T02:00:00Z) to db",
        "no differences",
    ]
    assert diff_json(db_url, repo_path, "HEAD", "db") == {
        "from": f"{second[:10]} (2026-11-21T02:00:00Z)",
        "to": "db",
        "tables": {},
    }


def test_diff_head_db_shows_what_the_next_export_commits(db_url, repo_path):
    _, second = two_days(db_url, repo_path)
    execute(
        db_url,
        "UPDATE materials SET unit_price = 11.00 WHERE id = 1",
        "INSERT INTO sections VALUES (3, 'Menuiserie')",
    )
    assert diff(db_url, repo_path, "HEAD", "db") == [
        f"from {second[:10]} (2026-11-21T02:00:00Z) to db",
        "materials: ~1",
        '  ~ id=1: unit_price "10.00" → "11.00"',
        "sections: +1",
        "  + id=3",
    ]
    assert diff(db_url, repo_path, "db", "HEAD")[1:] == [
        "materials: ~1",
        '  ~ id=1: unit_price "11.00" → "10.00"',
        "sections: -1",
        "  - id=3",
    ]
    out = export(db_url, repo_path, DAY3)
    assert out == f"committed {head(repo_path)[:10]} snapshot {DAY3}: materials ~1; sections +1\n"
    assert diff(db_url, repo_path, "HEAD", "db")[1:] == ["no differences"]


def test_diff_head_db_reads_the_database_as_the_last_export_did(sqlite_url, repo_path):
    materials(sqlite_url)
    export(sqlite_url, repo_path, DAY1, "--exclude-column", "materials.label")
    execute(
        sqlite_url,
        "UPDATE materials SET label = 'secret' WHERE id = 1",
        "CREATE TABLE extra (id integer PRIMARY KEY)",
    )
    assert diff(sqlite_url, repo_path, "HEAD", "db")[1:] == ["no differences"]


def test_a_row_deleted_and_inserted_again_is_not_reported(db_url, repo_path):
    two_days(db_url, repo_path)
    execute(
        db_url,
        "CREATE TABLE saved AS SELECT * FROM materials WHERE id IN (1, 3)",
        "DELETE FROM materials WHERE id IN (1, 3)",
        "INSERT INTO materials SELECT * FROM saved ORDER BY id DESC",
        "DROP TABLE saved",
        "UPDATE materials SET label = label",
        "DELETE FROM sections",
        "INSERT INTO sections VALUES (2, 'Électricité'), (1, 'Plomberie')",
    )
    assert diff(db_url, repo_path, "HEAD", "db")[1:] == ["no differences"]
    assert export(db_url, repo_path, DAY3) == "no changes\n"


def ctids(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [
                r[0] for r in conn.exec_driver_sql("SELECT ctid::text FROM materials ORDER BY id")
            ]
    finally:
        engine.dispose()


def test_rows_moved_by_cluster_and_vacuum_full_are_not_reported(pg_url, repo_path):
    two_days(pg_url, repo_path)
    execute(
        pg_url,
        "CREATE INDEX materials_price ON materials (unit_price DESC)",
        "UPDATE materials SET unit_price = unit_price WHERE id IN (1, 12)",
    )
    moved = ctids(pg_url)
    execute(pg_url, "CLUSTER materials USING materials_price")
    assert ctids(pg_url) != moved
    assert diff(pg_url, repo_path, "HEAD", "db")[1:] == ["no differences"]
    engine = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("DELETE FROM materials WHERE id = 13")
            conn.exec_driver_sql("INSERT INTO materials VALUES (13, 'Interrupteur', 5.00, '{}')")
            conn.exec_driver_sql("VACUUM FULL materials")
    finally:
        engine.dispose()
    assert diff(pg_url, repo_path, "HEAD", "db")[1:] == ["no differences"]
    assert export(pg_url, repo_path, DAY3) == "no changes\n"


# ------------------------------------------------------------- key-less tables


def test_a_third_copy_of_a_duplicate_row_is_one_added_row(db_url, repo_path):
    execute(
        db_url,
        "CREATE TABLE tags (material_id integer, tag varchar(20))",
        "INSERT INTO tags VALUES (1, 'x'), (2, 'y'), (1, 'x')",
    )
    export(db_url, repo_path, DAY1)
    execute(db_url, "INSERT INTO tags VALUES (1, 'x')")
    assert diff(db_url, repo_path, "HEAD", "db")[1:] == [
        "tags: +1",
        '  + material_id=1, tag="x"',
    ]
    assert diff_json(db_url, repo_path, "HEAD", "db")["tables"] == {
        "tags": {"added": [{"material_id": 1, "tag": "x"}], "removed": [], "changed": []}
    }
    out = export(db_url, repo_path, DAY2)
    assert out == f"committed {head(repo_path)[:10]} snapshot {DAY2}: tags +1\n"
    execute(db_url, "DELETE FROM tags WHERE tag = 'y'")
    assert diff(db_url, repo_path, "HEAD", "db")[1:] == [
        "tags: -1",
        '  - material_id=2, tag="y"',
    ]


def test_duplicate_rows_deleted_and_inserted_again_are_not_reported(db_url, repo_path):
    execute(
        db_url,
        "CREATE TABLE tags (material_id integer, tag varchar(20))",
        "INSERT INTO tags VALUES (1, 'x'), (1, 'x'), (2, 'y')",
    )
    export(db_url, repo_path, DAY1)
    execute(
        db_url,
        "DELETE FROM tags",
        "INSERT INTO tags VALUES (2, 'y'), (1, 'x'), (1, 'x')",
    )
    assert diff(db_url, repo_path, "HEAD", "db")[1:] == ["no differences"]
    execute(db_url, "DELETE FROM tags WHERE material_id = 1", "INSERT INTO tags VALUES (1, 'x')")
    assert diff(db_url, repo_path, "HEAD", "db")[1:] == [
        "tags: -1",
        '  - material_id=1, tag="x"',
    ]
