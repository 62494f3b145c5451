import datetime as dt
import json
import math
import os
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import engine_for, execute, git, pg_database, run
from sqlalchemy.orm import Session

from backend import codec, layout
from backend.dialects import postgresql
from backend.models import Base, Material, Section, Supplier

STAMP = "2026-11-28T02:00:00Z"
JSONSNAP = Path(sys.executable).with_name("jsonsnap")

# Without array columns a table is read through PostgreSQL's COPY (the fast path);
# `arrs` has arrays and is read through SQLAlchemy values (the slow path).
PG_TABLES = [
    """
    CREATE TABLE vals (
        id int PRIMARY KEY,
        num numeric(20, 6),
        tstz timestamptz,
        ts timestamp,
        d date,
        t time,
        ttz timetz,
        iv interval,
        b bytea,
        u uuid,
        jb jsonb,
        j json,
        f double precision,
        r real,
        bo boolean,
        bi bigint,
        tx text
    )
    """,
    "CREATE TABLE arrs (id int PRIMARY KEY, arr text[], arr2 int[][], tss timestamptz[])",
]

PG_ROWS = [
    r"""
    INSERT INTO vals VALUES
    (1, 123456.789012, '2026-11-28 03:00:00.123456+01', '2026-11-28 03:00:00.5', '2026-11-28',
     '13:14:15.25', '13:14:15+02', '1 year 2 mons 3 days 04:05:06.5', '\xdeadbeef00',
     '12345678-1234-5678-1234-567812345678',
     '{"z": 1, "b": 12.50, "a": {"y": 1e2, "x": 1234567890123456789012345}, "é": "ünï"}',
     '{"z": 1, "b": 12.50, "e": 1e2}',
     'NaN', 1.5, true, 9223372036854775807, E'line1\nline2 "q" \\ éà\ttab \\N'),
    (2, -0.000001, '1970-01-01 00:00:00+00', '0001-01-01 00:00:00', '0001-01-01',
     '00:00:00', '23:59:59.999999-05:30', '-1 day', '', '00000000-0000-0000-0000-000000000000',
     '[]', '"text é"', 'Infinity', -2.25, false, -9223372036854775808, ''),
    (3, NULL, NULL, NULL, NULL, NULL, NULL, '0', NULL, NULL, NULL, NULL,
     '-Infinity', NULL, NULL, NULL, NULL),
    (4, 0, 'infinity', '-infinity', '12345-06-07', NULL, NULL, '3 days 04:05:06.5', NULL, NULL,
     NULL, NULL, 0.30000000000000004, 0.1, NULL, 0, '\N'),
    (5, NULL, '-infinity', '12345-06-07 08:09:10', 'infinity', NULL, NULL, NULL, NULL, NULL,
     NULL, NULL, 1e-300, NULL, NULL, NULL, NULL)
    """,
    """
    INSERT INTO arrs VALUES
    (1, ARRAY['a', NULL, 'b,c', '{x}', 'é "q"'], ARRAY[[1, 2], [3, 4]],
     ARRAY['2026-11-28 03:00:00+01'::timestamptz, NULL]),
    (2, '{}', '{}', '{}'),
    (3, NULL, NULL, NULL)
    """,
]

NULL_ROW = dict.fromkeys("num tstz ts d t ttz iv b u jb j f r bo bi tx".split())  # noqa: SIM905

PG_EXPECTED = [
    {
        "id": 1,
        "num": "123456.789012",
        "tstz": "2026-11-28T02:00:00.123456+00:00",
        "ts": "2026-11-28T03:00:00.5",
        "d": "2026-11-28",
        "t": "13:14:15.25",
        "ttz": "13:14:15+02:00",  # PostgreSQL prints +02; ISO 8601 wants +02:00
        "iv": "P1Y2M3DT4H5M6.5S",
        "b": "3q2+7wA=",
        "u": "12345678-1234-5678-1234-567812345678",
        "jb": {"a": {"x": 1234567890123456789012345, "y": 100}, "b": 12.5, "z": 1, "é": "ünï"},
        "j": {"b": 12.5, "e": 100.0, "z": 1},
        "f": "NaN",
        "r": 1.5,
        "bo": True,
        "bi": 9223372036854775807,
        "tx": 'line1\nline2 "q" \\ éà\ttab \\N',
    },
    {
        "id": 2,
        "num": "-0.000001",
        "tstz": "1970-01-01T00:00:00+00:00",
        "ts": "0001-01-01T00:00:00",
        "d": "0001-01-01",
        "t": "00:00:00",
        "ttz": "23:59:59.999999-05:30",
        "iv": "P-1D",
        "b": "",
        "u": "00000000-0000-0000-0000-000000000000",
        "jb": [],
        "j": "text é",
        "f": "Infinity",
        "r": -2.25,
        "bo": False,
        "bi": -9223372036854775808,
        "tx": "",
    },
    {**NULL_ROW, "id": 3, "iv": "PT0S", "f": "-Infinity"},
    {
        **NULL_ROW,
        "id": 4,
        "num": "0.000000",
        "tstz": "infinity",
        "ts": "-infinity",
        "d": "12345-06-07",
        "iv": "P3DT4H5M6.5S",
        "f": 0.30000000000000004,
        "r": 0.1,
        "bi": 0,
        "tx": "\\N",
    },
    {
        **NULL_ROW,
        "id": 5,
        "tstz": "-infinity",
        "ts": "12345-06-07T08:09:10",
        "d": "infinity",
        "f": 1e-300,
    },
]

PG_KINDS = {
    "id": "integer",
    "num": "decimal",
    "tstz": "datetime_tz",
    "ts": "datetime",
    "d": "date",
    "t": "time",
    "ttz": "time",
    "iv": "interval",
    "b": "bytes",
    "u": "uuid",
    "jb": "json",
    "j": "json",
    "f": "float",
    "r": "float",
    "bo": "boolean",
    "bi": "integer",
    "tx": "string",
}


def export(url, repo):
    result = run("export", "--db", url, "--repo", str(repo), "--timestamp", STAMP)
    assert result.exit_code == 0, result.output
    return result


def table_file(repo, name):
    return json.loads((repo / "tables" / f"{name}.json").read_bytes())


def table_bytes(repo, name):
    return (repo / "tables" / f"{name}.json").read_bytes()


def manifest_kinds(repo, name):
    manifest = json.loads((repo / "manifest.json").read_bytes())
    return {c["name"]: c["kind"] for c in manifest["tables"][name]["columns"]}


def decode(kind, value):
    dec = codec.decoder(kind)
    return value if dec is None else dec(value)


def select_rows(url, table, ids, columns=None):
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            tbl = sa.Table(table, sa.MetaData(), autoload_with=conn)
            chosen = [tbl.c[c] for c in columns] if columns else [tbl]
            query = sa.select(*chosen).where(tbl.c.id.in_(ids)).order_by(tbl.c.id)
            return [row._asdict() for row in conn.execute(query)]
    finally:
        engine.dispose()


def same_value(decoded, expected):
    if isinstance(expected, float) and math.isnan(expected):
        return isinstance(decoded, float) and math.isnan(decoded)
    return type(decoded) is type(expected) and decoded == expected


@pytest.fixture
def pg_values(pg_url, repo_path):
    execute(pg_url, *PG_TABLES, *PG_ROWS)
    export(pg_url, repo_path)
    return pg_url


def test_postgres_values_are_written_exactly(pg_values, repo_path):
    assert table_file(repo_path, "vals") == PG_EXPECTED


def test_postgres_arrays_are_written_exactly(pg_values, repo_path):
    assert table_file(repo_path, "arrs") == [
        {
            "id": 1,
            "arr": ["a", None, "b,c", "{x}", 'é "q"'],
            "arr2": [[1, 2], [3, 4]],
            "tss": ["2026-11-28T02:00:00+00:00", None],
        },
        {"id": 2, "arr": [], "arr2": [], "tss": []},
        {"id": 3, "arr": None, "arr2": None, "tss": None},
    ]
    assert manifest_kinds(repo_path, "arrs") == {
        "id": "integer",
        "arr": "array:string",
        "arr2": "array:integer",
        "tss": "array:datetime_tz",
    }


def test_postgres_json_numbers_keep_their_digits(pg_values, repo_path):
    raw = table_bytes(repo_path, "vals")
    assert b'      "b": 12.50,\n' in raw
    assert b'        "x": 1234567890123456789012345,\n' in raw
    assert b'      "e": 1e2,\n' in raw
    assert '      "é": "ünï"\n'.encode() in raw
    assert '    "tx": "line1\\nline2 \\"q\\" \\\\ éà\\ttab \\\\N",\n'.encode() in raw


def test_postgres_column_kinds(pg_values, repo_path):
    assert manifest_kinds(repo_path, "vals") == PG_KINDS


def test_postgres_values_decode_to_what_sqlalchemy_returns(pg_values, repo_path):
    kinds = manifest_kinds(repo_path, "vals")
    rows = table_file(repo_path, "vals")[:3]
    expected_rows = select_rows(pg_values, "vals", [1, 2, 3])
    for row, expected in zip(rows, expected_rows, strict=True):
        expected["b"] = None if expected["b"] is None else bytes(expected["b"])
        for name in row.keys() - {"iv"}:
            decoded = decode(kinds[name], row[name])
            assert same_value(decoded, expected[name]), (row["id"], name, decoded)


def test_postgres_arrays_decode_to_what_sqlalchemy_returns(pg_values, repo_path):
    kinds = manifest_kinds(repo_path, "arrs")
    rows = table_file(repo_path, "arrs")
    expected = select_rows(pg_values, "arrs", [1, 2, 3])
    decoded = [{name: decode(kinds[name], value) for name, value in r.items()} for r in rows]
    assert decoded == expected
    assert decoded[0]["tss"] == [dt.datetime(2026, 11, 28, 2, tzinfo=dt.UTC), None]


def test_postgres_float_and_real_decode_to_what_sqlalchemy_returns(pg_values, repo_path):
    rows = table_file(repo_path, "vals")
    expected = select_rows(pg_values, "vals", [1, 2, 3, 4, 5], ["f", "r"])
    assert [decode("float", r["f"]) for r in rows[1:]] == [e["f"] for e in expected[1:]]
    assert math.isnan(decode("float", rows[0]["f"]))
    assert [decode("float", r["r"]) for r in rows] == [e["r"] for e in expected]


def test_postgres_intervals_without_months_decode_to_timedelta(pg_values, repo_path):
    kind = manifest_kinds(repo_path, "vals")["iv"]
    rows = table_file(repo_path, "vals")
    expected = select_rows(pg_values, "vals", [2, 3, 4], ["iv"])
    assert [decode(kind, r["iv"]) for r in rows[1:4]] == [e["iv"] for e in expected]
    assert [e["iv"] for e in expected] == [
        dt.timedelta(days=-1),
        dt.timedelta(0),
        dt.timedelta(days=3, hours=4, minutes=5, seconds=6, microseconds=500000),
    ]


def test_postgres_interval_with_months_stays_a_string(pg_values, repo_path):
    kind = manifest_kinds(repo_path, "vals")["iv"]
    assert decode(kind, table_file(repo_path, "vals")[0]["iv"]) == "P1Y2M3DT4H5M6.5S"


def without_zz(data):
    return data.replace(b',\n    "zz": null\n', b"\n")


def copy_with_array_column(url, table):
    # The same rows plus an always-NULL array column "zz" (sorted last), which
    # sends the copy through the slow path.
    execute(
        url,
        f"CREATE TABLE {table}_slow AS SELECT *, NULL::int[] AS zz FROM {table}",
        f"ALTER TABLE {table}_slow ADD PRIMARY KEY (k)",
    )


# Every character JSON must escape, and some it must not, in strings, keys and
# JSON documents: the server's to_json and orjson must agree on each.
TRICKY_ROW = r"""
    (E'q"\\k', 1.10, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
     '{"s": "a, b: c", "t": "x\u0001y\"", "n": [0.10, 1e400, -0.0001, 100000000000000000000]}',
     '{"s": "a, b: c"}', NULL, NULL, NULL, NULL,
     (SELECT string_agg(chr(i), '') FROM generate_series(1, 160) i) || chr(8232) || chr(128512),
     NULL, NULL, NULL, E'\\', E' \t')"""


def fill_every_kind(url, drop=()):
    execute(
        url,
        "CREATE TYPE mood AS ENUM ('sad', 'ok')",
        "CREATE TABLE t (k text PRIMARY KEY, num numeric, tstz timestamptz, ts timestamp,"
        " d date, tm time, ttz timetz, iv interval, b bytea, u uuid, jb jsonb, j json,"
        " f double precision, r real, bo boolean, bi bigint, tx text, m mood, x xml,"
        " net cidr, vc varchar(10), c char(3))",
        r"""INSERT INTO t VALUES
        ('a', 0.00000001, '2026-11-28 03:00:00.123456+01', '2026-11-28 03:00:00.5',
         '2026-11-28', '13:14:15.25', '13:14:15+02', '1 year 2 mons', '\x5c00ff',
         '12345678-1234-5678-1234-567812345678', '{"s": "q\"\\\t\u00e9", "n": 1.50}',
         '{"s": "\u00e9\\n", "b": 12.50, "e": 1E+2}', '-0', 0.1, true, 1,
         E'tab\there\\N\nnl "q" \\ \r\b\f\v', 'ok', '<a>é</a>', '10.0.0.0/8', 'é', 'ab'),
        ('B', 'NaN', 'infinity', '0044-03-15 10:00:00 BC', '12345-06-07', '24:00:00',
         '00:00:00-05:30', '-1 day +02:00', '', '00000000-0000-0000-0000-000000000000', '[]',
         'null', 'NaN', 'Infinity', false, -1, E'\\N', 'sad', NULL, '::/0', '', NULL),
        (E'\\N', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
         NULL, NULL, '', NULL, '', NULL, NULL, ''),
        ('é', 1e20, '1900-01-01 00:00:00+00:19:32', '-infinity', '0001-01-01 BC',
         '00:00:00.000001', '23:59:59.999999+14', '0', E'\\x00',
         '00000000-0000-0000-0000-000000000001',
         '{"a": {"b": [1, {"c": null}], "": {}}}', '"x"', 1e-300, -3.4e38, NULL,
         9223372036854775807, E'\x01\x7f', NULL, NULL, NULL, 'x', NULL),
        ('Z', -123.4500, '2026-03-29 01:30:00-07', '2026-03-29 02:30:00', '2026-03-29',
         '23:59:59', '12:00:00+00', '-1 mons -3 days -00:00:01.5', '\x0a0d09',
         'ffffffff-ffff-ffff-ffff-ffffffffffff', '{"é": [true, false, null, "\\u0000x"]}',
         '  {"k" : [1 , 2]}  ', 5e-324, 1e-45, true, 0, 'plain', 'ok', '<b/>',
         '192.168.0.0/16', 'abc', 'a'),"""
        + TRICKY_ROW,
        *(f"ALTER TABLE t DROP COLUMN {column}" for column in drop),
    )


@pytest.mark.parametrize(
    "drop",
    [(), ("x", "net")],
    ids=["types-only-python-can-print", "every-type-the-server-can-print"],
)
def test_postgres_fast_and_slow_paths_write_the_same_bytes(pg_url, repo_path, read_path, drop):
    # Compiled, every COPY line is encoded in C. Pure, xml and cidr keep the
    # table on the path that encodes each line in Python; without them the
    # server prints the rows. Each must equal the slow path, which builds
    # Python values.
    fill_every_kind(pg_url, drop)
    copy_with_array_column(pg_url, "t")
    export(pg_url, repo_path)
    fast, slow = table_bytes(repo_path, "t"), table_bytes(repo_path, "t_slow")
    assert slow.count(b'"zz": null') == 6
    assert without_zz(slow) == fast
    assert manifest_kinds(repo_path, "t") == {
        k: v for k, v in manifest_kinds(repo_path, "t_slow").items() if k != "zz"
    }
    assert [r["k"] for r in json.loads(fast)] == ["B", "Z", "\\N", "a", 'q"\\k', "é"]


def test_postgres_rows_without_a_key_are_sorted_by_their_bytes(pg_url, repo_path, read_path):
    fill_every_kind(pg_url, ("x", "net"))
    execute(pg_url, "CREATE TABLE keyless AS SELECT * FROM t")
    export(pg_url, repo_path)
    keyed, keyless = table_bytes(repo_path, "t"), table_bytes(repo_path, "keyless")
    assert list(layout.iter_rows(keyless)) == sorted(layout.iter_rows(keyed))


def test_postgres_string_escapes_match_orjson(pg_url, repo_path, read_path):
    # The server's to_json against orjson, for every code point up to 0x2FF
    # and a few beyond, in a key column and a value column.
    execute(
        pg_url,
        "CREATE TABLE chars (k text PRIMARY KEY, v varchar)",
        "INSERT INTO chars SELECT chr(i) || 'k', 'v' || chr(i) FROM generate_series(1, 767) i",
        "INSERT INTO chars VALUES (chr(8232) || chr(8233), chr(65279) || chr(1114111))",
    )
    export(pg_url, repo_path)
    rows = sorted(layout.iter_rows(table_bytes(repo_path, "chars")))
    expected = [
        codec.pretty_row({"k": k, "v": v})
        for k, v in [(chr(i) + "k", "v" + chr(i)) for i in range(1, 768)]
        + [("\u2028\u2029", "\ufeff\U0010ffff")]
    ]
    assert rows == sorted(expected)


def test_postgres_inet_is_written_the_same_by_both_read_paths(pg_url, repo_path, read_path):
    execute(
        pg_url,
        "CREATE TABLE t (k text PRIMARY KEY, ip inet)",
        "INSERT INTO t VALUES ('a', '10.0.0.1'), ('b', '::1'), ('c', '10.0.0.1/8')",
    )
    copy_with_array_column(pg_url, "t")
    export(pg_url, repo_path)
    assert [r["ip"] for r in table_file(repo_path, "t")] == ["10.0.0.1", "::1", "10.0.0.1/8"]
    assert without_zz(table_bytes(repo_path, "t_slow")) == table_bytes(repo_path, "t")


def fill_sqlite_models(url):
    engine = sa.create_engine(url)
    Base.metadata.create_all(engine)
    with Session(engine) as session, session.begin():
        session.add(Section(id=1, slug="élec", label='Électricité "q"\n\\', position=1))
        session.add(Supplier(id=1, name="Dupré", email=None, city="Lyon"))
        session.add(
            Material(
                id=1,
                reference="MAT-00001",
                label="Câble — éco",
                section_id=1,
                supplier_id=1,
                unit="m²",
                unit_price=Decimal("1234.50"),
                quantity=Decimal("0.001"),
                vat_rate=Decimal("5.50"),
                available_from=dt.date(2026, 2, 3),
                updated_at=dt.datetime(2026, 11, 28, 3, 0, 0, 123456),
                attributes={"z": 1, "b": 12.5, "nested": {"y": [1, None, "é"], "a": True}},
            )
        )
    engine.dispose()
    execute(
        url,
        "CREATE TABLE dyn (id INTEGER PRIMARY KEY, v)",
        "INSERT INTO dyn VALUES (1, 42), (2, 1.5), (3, 'text é'), (4, x'00ff10'), (5, NULL),"
        " (6, 9e999), (7, -9e999), (8, 12345678901234567)",
        "CREATE TABLE js (id INTEGER PRIMARY KEY, j JSON)",
        """INSERT INTO js VALUES (1, '{"z": 1, "b": 12.50, "a": 1e2, "é": "ünï"}')""",
    )


@pytest.fixture
def sqlite_values(sqlite_url, repo_path):
    fill_sqlite_models(sqlite_url)
    export(sqlite_url, repo_path)
    return sqlite_url


def test_sqlite_model_values_are_written_exactly(sqlite_values, repo_path):
    assert table_file(repo_path, "materials") == [
        {
            "attributes": {"b": 12.5, "nested": {"a": True, "y": [1, None, "é"]}, "z": 1},
            "available_from": "2026-02-03",
            "id": 1,
            "label": "Câble — éco",
            "quantity": "0.001",
            "reference": "MAT-00001",
            "section_id": 1,
            "supplier_id": 1,
            "unit": "m²",
            "unit_price": "1234.50",
            "updated_at": "2026-11-28T03:00:00.123456",
            "vat_rate": "5.50",
        }
    ]
    assert table_file(repo_path, "sections") == [
        {"id": 1, "label": 'Électricité "q"\n\\', "position": 1, "slug": "élec"}
    ]
    assert table_file(repo_path, "suppliers") == [
        {"city": "Lyon", "email": None, "id": 1, "name": "Dupré"}
    ]


def test_sqlite_model_column_kinds(sqlite_values, repo_path):
    assert manifest_kinds(repo_path, "materials") == {
        "id": "integer",
        "reference": "string",
        "label": "string",
        "section_id": "integer",
        "supplier_id": "integer",
        "unit": "string",
        "unit_price": "decimal",
        "quantity": "decimal",
        "vat_rate": "decimal",
        "available_from": "date",
        "updated_at": "datetime",
        "attributes": "json",
    }
    assert manifest_kinds(repo_path, "dyn") == {"id": "integer", "v": "any"}


def test_sqlite_model_values_decode_to_what_sqlalchemy_returns(sqlite_values, repo_path):
    kinds = manifest_kinds(repo_path, "materials")
    (row,) = table_file(repo_path, "materials")
    engine = sa.create_engine(sqlite_values)
    with engine.connect() as conn:
        expected = conn.execute(sa.select(Material.__table__)).one()._asdict()
    engine.dispose()
    assert expected["unit_price"] == Decimal("1234.50")
    assert expected["updated_at"] == dt.datetime(2026, 11, 28, 3, 0, 0, 123456)
    for name, value in row.items():
        decoded = decode(kinds[name], value)
        assert same_value(decoded, expected[name]), (name, decoded)


def test_sqlite_json_text_is_kept_verbatim(sqlite_values, repo_path):
    raw = (repo_path / "tables" / "js.json").read_bytes()
    assert (
        raw
        == (
            '[\n  {\n    "id": 1,\n    "j": {\n      "a": 1e2,\n      "b": 12.50,\n'
            '      "z": 1,\n      "é": "ünï"\n    }\n  }\n]\n'
        ).encode()
    )


def test_sqlite_undeclared_type_keeps_storage_class(sqlite_values, repo_path):
    assert table_file(repo_path, "dyn") == [
        {"id": 1, "v": 42},
        {"id": 2, "v": 1.5},
        {"id": 3, "v": "text é"},
        {"id": 4, "v": {"base64": "AP8Q"}},
        {"id": 5, "v": None},
        {"id": 6, "v": {"float": "Infinity"}},
        {"id": 7, "v": {"float": "-Infinity"}},
        {"id": 8, "v": 12345678901234567},
    ]


def test_sqlite_undeclared_type_decodes_to_what_sqlalchemy_returns(sqlite_values, repo_path):
    rows = table_file(repo_path, "dyn")
    expected = select_rows(sqlite_values, "dyn", list(range(1, 9)))
    decoded = [decode("any", r["v"]) for r in rows]
    assert decoded == [e["v"] for e in expected]
    big = 12345678901234567
    assert decoded == [42, 1.5, "text é", b"\x00\xff\x10", None, math.inf, -math.inf, big]
    assert [type(v) for v in decoded] == [int, float, str, bytes, type(None), float, float, int]


def test_any_kind_tags_nan_float():
    # SQLite stores a bound NaN as NULL, so the tag can only be reached directly.
    enc = codec.encoder("any")
    assert enc(math.nan) == {"float": "NaN"}
    assert math.isnan(decode("any", {"float": "NaN"}))
    assert enc(b"") == {"base64": ""}
    assert decode("any", {"base64": ""}) == b""


def test_uuid_and_bytes_codecs_round_trip():
    value = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert decode("uuid", codec.encoder("uuid")(value)) == value
    assert decode("bytes", codec.encoder("bytes")(memoryview(b"\xde\xad"))) == b"\xde\xad"
    assert codec.encoder("bytes")(None) is None


LOCALE_KEYS = ["b", "B", "é", "e", "E", "Z", "a b", "a_b", "ä", "z"]


def fill_locale_data(url):
    pg = url.startswith("postgresql")
    tz_column, tz = (", tz timestamptz", ", '2026-03-29 01:30:00+01'") if pg else ("", "")
    execute(
        url,
        f"CREATE TABLE t (k varchar(20) PRIMARY KEY, at timestamp, d date, n numeric(10, 2)"
        f"{tz_column})",
        *[
            f"INSERT INTO t VALUES ('{k}', '2026-03-29 02:30:00', '2026-03-29', {i}.25{tz})"
            for i, k in enumerate(LOCALE_KEYS)
        ],
        "CREATE TABLE nokey (label varchar(20), n int)",
        "INSERT INTO nokey VALUES ('é', 1), ('e', 2), ('E', 3), ('é', 1), ('Z', 4), ('a', 5)",
    )
    if pg:  # arrays take the slow, value-based read path
        execute(
            url,
            "CREATE TABLE arr_t (k varchar(20) PRIMARY KEY, tss timestamptz[])",
            "INSERT INTO arr_t VALUES ('é', ARRAY['2026-03-29 01:30:00+01'::timestamptz]),"
            " ('e', '{}'), ('E', NULL)",
        )


def export_in_env(url, repo, **env):
    result = subprocess.run(
        [str(JSONSNAP), "export", "--db", url, "--repo", str(repo), "--timestamp", STAMP],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def files_of(repo):
    return {
        p.relative_to(repo).as_posix(): p.read_bytes()
        for p in sorted(repo.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(repo).parts
    }


def test_bytes_do_not_depend_on_time_zone_or_locale(db_url, tmp_path):
    fill_locale_data(db_url)
    first, second = tmp_path / "ny", tmp_path / "tokyo"
    export_in_env(db_url, first, TZ="America/New_York", LC_ALL="C")
    export_in_env(db_url, second, TZ="Asia/Tokyo", LC_ALL="C.UTF-8")
    assert files_of(first) == files_of(second)
    pg = db_url.startswith("postgresql")
    assert sorted(files_of(first)) == [
        "README.md",
        "manifest.json",
        *(["tables/arr_t.json"] if pg else []),
        "tables/nokey.json",
        "tables/t.json",
    ]
    assert git(first, "rev-parse", "HEAD^{tree}") == git(second, "rev-parse", "HEAD^{tree}")
    assert git(first, "rev-parse", "HEAD") == git(second, "rev-parse", "HEAD")
    rows = json.loads(files_of(first)["tables/t.json"])
    assert [r["k"] for r in rows] == ["B", "E", "Z", "a b", "a_b", "b", "e", "z", "ä", "é"]
    assert rows[0] == {
        "k": "B",
        "at": "2026-03-29T02:30:00",
        "d": "2026-03-29",
        "n": "1.25",
        **({"tz": "2026-03-29T00:30:00+00:00"} if pg else {}),
    }
    nokey = json.loads(files_of(first)["tables/nokey.json"])
    assert [(r["label"], r["n"]) for r in nokey] == [
        ("E", 3),
        ("Z", 4),
        ("a", 5),
        ("e", 2),
        ("é", 1),
        ("é", 1),
    ]
    if pg:
        assert json.loads(files_of(first)["tables/arr_t.json"]) == [
            {"k": "E", "tss": None},
            {"k": "e", "tss": []},
            {"k": "é", "tss": ["2026-03-29T00:30:00+00:00"]},
        ]


def test_postgres_repeating_client_encoded_values_match_the_slow_path(
    pg_url, repo_path, monkeypatch, read_path
):
    # JSON, float, time and bytea values are encoded in Python and remembered
    # by their COPY text; a memo this small is emptied many times over.
    monkeypatch.setattr(postgresql, "_MEMO_BYTES", 200)
    execute(
        pg_url,
        "CREATE TABLE t (k int PRIMARY KEY, j jsonb, f float8, tm time, b bytea)",
        "INSERT INTO t SELECT i, jsonb_build_object('n', mod(i, 7), 's', E'a\\\\b' || mod(i, 3)),"
        " CASE WHEN mod(i, 5) = 0 THEN NULL ELSE mod(i, 4) / 3.0 END, make_time(0, 0, mod(i, 6)),"
        " decode(lpad(to_hex(mod(i, 9)), 2, '0'), 'hex') FROM generate_series(1, 3000) i",
    )
    copy_with_array_column(pg_url, "t")
    export(pg_url, repo_path)
    fast, slow = table_bytes(repo_path, "t"), table_bytes(repo_path, "t_slow")
    assert without_zz(slow) == fast
    assert fast.count(b'"f": null') == 600


@pytest.mark.parametrize("encoding", ["LATIN1", "WIN1252"])
def test_postgres_database_in_another_encoding_is_written_as_utf8(
    pg_server, repo_path, read_path, encoding
):
    # The export reads in UTF-8 whatever the database's encoding: the server
    # converts, and every path writes the same UTF-8 JSON.
    options = f"ENCODING '{encoding}' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
    with pg_database(pg_server, options) as url:
        execute(
            url,
            "CREATE TABLE t (k text PRIMARY KEY, v varchar(20), n int)",
            "INSERT INTO t VALUES ('café', E'tab\\there é', 1), ('a\"b', 'plain', 2)",
        )
        copy_with_array_column(url, "t")
        export(url, repo_path)
    rows = table_file(repo_path, "t")
    assert [(r["k"], r["v"]) for r in rows] == [('a"b', "plain"), ("café", "tab\there é")]
    assert without_zz(table_bytes(repo_path, "t_slow")) == table_bytes(repo_path, "t")


def test_postgres_sql_ascii_text_that_is_not_utf8_is_a_clear_error(pg_server, repo_path, read_path):
    # A SQL_ASCII database stores any bytes; read in UTF-8, the server itself
    # refuses the ones that are not: one line, exit 1, and no snapshot.
    options = "ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
    with pg_database(pg_server, options) as url:
        execute(
            url,
            "CREATE TABLE t (k int PRIMARY KEY, v text)",
            "INSERT INTO t VALUES (1, 'ok'), (2, E'caf\\xe9')",
        )
        result = run("export", "--db", url, "--repo", str(repo_path), "--timestamp", STAMP)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and 'invalid byte sequence for encoding "UTF8"' in lines[0]
    assert not (repo_path / "tables").exists()


def test_postgres_database_in_another_encoding_is_restored_exactly(pg_server, repo_path):
    options = "ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
    with pg_database(pg_server, options) as url:
        execute(
            url,
            "CREATE TABLE t (k text PRIMARY KEY, v varchar(20))",
            "INSERT INTO t VALUES ('café', E'tab\\there é'), ('a\"b', 'ÿ')",
        )
        export(url, repo_path)
        execute(url, "UPDATE t SET v = 'changed'", "INSERT INTO t VALUES ('new', 'à')")
        restore = ["restore", "--db", url, "--repo", str(repo_path), "--date", "2026-11-28"]
        result = run(*restore, "--yes")
        assert result.exit_code == 0, result.output
        engine = engine_for(url)
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT k, v FROM t ORDER BY k").all()
        engine.dispose()
    assert [tuple(r) for r in rows] == [('a"b', "ÿ"), ("café", "tab\there é")]
