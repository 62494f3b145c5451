"""The compiled fast paths give exactly the bytes of the pure-Python ones.

Each test runs the same input through both ways. The export tests in
test_codec_values.py do the same end to end, on the real server
(the `read_path` fixture).
"""

import io
import random

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras
import pytest
import sqlalchemy as sa
from conftest import require_compiled

from backend import codec, layout, speedups
from backend.dialects import postgresql
from backend.dialects.base import RowSource
from backend.export import export_snapshot

pytestmark = pytest.mark.usefixtures("compiled")


@pytest.fixture
def compiled():
    require_compiled()


def both_ways(monkeypatch, func, *args):
    compiled = func(*args)
    with monkeypatch.context() as patch:
        patch.setattr(speedups, "native", None)
        pure = func(*args)
    return compiled, pure


def test_cut_positions_are_the_same(monkeypatch):
    rng = random.Random(7)
    keys = [b"[%d]" % i for i in range(200_000)]
    keys += [rng.randbytes(rng.randrange(0, 40)) for _ in range(50_000)]
    keys += [f'["é", {i}]'.encode() for i in range(20_000)]
    compiled, pure = both_ways(monkeypatch, layout.cut_positions, keys)
    assert compiled == pure
    assert 0 < len(pure) < len(keys) / 100  # a few cuts, not every key


def shard(rows):
    """A data file as the writer makes it."""
    if not rows:
        return b"[]\n"
    return b"[\n" + b",\n".join(codec.pretty_row(r) for r in rows) + b"\n]\n"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ([{"id": 1}], [{"id": 1}]),
        ([{"id": 1}], [{"id": 1, "v": 2}]),
        ([{"id": i} for i in range(5)], [{"id": i, "v": i % 2} for i in range(5)]),
        ([{"id": i} for i in range(5)], [{"id": i} for i in range(6)]),
        ([{"id": i} for i in range(5)], [{"id": i} for i in range(4)]),
        ([], [{"id": 1}]),
        ([], []),
        ([{"id": 1, "s": "a\n  },\n"}], [{"id": 1, "s": "b"}]),
    ],
    ids=[
        "same",
        "one-changed",
        "some-changed",
        "one-more",
        "one-fewer",
        "was-empty",
        "empty",
        "escaped-separator-in-a-string",
    ],
)
def test_differing_rows_are_the_same(monkeypatch, old, new):
    compiled, pure = both_ways(monkeypatch, layout.differing_rows, shard(old), shard(new))
    assert compiled == pure
    if pure is not None:
        assert all(o in layout.split_rows(shard(old)) for o, _ in pure)
        assert all(n in layout.split_rows(shard(new)) for _, n in pure)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"[\n  },\n  {x}\n]\n", b"[\n\n  },\n  {x}\n]\n"),
        (b"[\n  {x},\n  },\n]\n", b"[\n  {x},\n  },\n\n]\n"),
    ],
)
def test_differing_rows_of_files_jsonsnap_never_writes_are_the_same(monkeypatch, old, new):
    # The first and last pieces differ only in what split_bare_rows trims off.
    compiled, pure = both_ways(monkeypatch, layout.differing_rows, old, new)
    assert compiled == pure


def test_differing_rows_of_large_shards_are_the_same(monkeypatch):
    # Long shared runs between the differences, as in a real shard: the
    # compiled comparison skips them in blocks, and must not skip a difference.
    rng = random.Random(5)
    rows = [{"id": i, "v": "x" * rng.randrange(0, 300)} for i in range(3000)]
    for _ in range(20):
        new = [dict(row) for row in rows]
        for i in rng.sample(range(len(new)), rng.randrange(1, 30)):
            value = new[i]["v"]
            at = rng.randrange(len(value) + 1)
            new[i]["v"] = value[:at] + rng.choice(["y", "", "yy"]) + value[at + 1 :]
        compiled, pure = both_ways(monkeypatch, layout.differing_rows, shard(rows), shard(new))
        assert compiled == pure
        assert len(pure) == sum(a != b for a, b in zip(rows, new, strict=True))


def test_differing_rows_gives_whole_rows(monkeypatch):
    old = [{"id": i, "v": 0} for i in range(4)]
    new = [{"id": i, "v": int(i in (0, 3))} for i in range(4)]
    compiled, pure = both_ways(monkeypatch, layout.differing_rows, shard(old), shard(new))
    expected = [(codec.pretty_row(old[i]), codec.pretty_row(new[i])) for i in (0, 3)]
    assert compiled == pure == expected


def split_offsets(data, sep):
    """bytes.split's pieces, as (start, end) offsets."""
    pieces, start = [], 0
    for piece in data.split(sep):
        pieces.append((start, start + len(piece)))
        start += len(piece) + len(sep)
    return pieces


def test_differing_rows_splits_exactly_as_bytes_split():
    # Random bytes rich in the separator's own characters: overlapping and
    # partial separators, at the ends too, split as bytes.split does.
    rng = random.Random(3)
    sep = b"\n  },\n"
    for _ in range(3000):
        tokens = [sep, sep[:4], sep[3:], sep[1:], b"}", b"\n", b" ", b"a", b"{"]
        old = b"".join(rng.choice(tokens) for _ in range(rng.randrange(0, 12)))
        new = bytearray(old)
        for _ in range(rng.randrange(0, 3)):
            if new:
                new[rng.randrange(len(new))] = rng.choice(b"\n },b")
        new = bytes(new)
        old_pieces, new_pieces = split_offsets(old, sep), split_offsets(new, sep)
        expected = None
        if len(old_pieces) == len(new_pieces):
            expected = [
                (*o, *n)
                for o, n in zip(old_pieces, new_pieces, strict=True)
                if old[o[0] : o[1]] != new[n[0] : n[1]]
            ]
        assert speedups.native.differing_rows(old, new, sep) == expected, (old, new)


# COPY text as PostgreSQL writes it (escapes included), for every kind the
# compiled encoder handles itself or hands to Python, with values it must leave
# to the kind's Python encoder: NULLs, escapes, odd booleans, BC and infinite times.
KINDS = {
    "b": "boolean",
    "d": "date",
    "f": "float",
    "i": "integer",
    "j": "json",
    "n": "decimal",
    "s": "string",
    "tm": "time",
    "ts": "datetime",
    "tz": "datetime_tz",
    "u": "uuid",
    "x": "text",
    "y": "bytes",
}
FIELDS = [
    [
        "t",
        "2026-11-28",
        "0.5",
        "1",
        "{}",
        "1.50",
        "plain",
        "13:14:15",
        "2026-11-28 03:00:00",
        "2026-11-28 02:00:00.5+00",
        "12345678-1234-5678-1234-567812345678",
        "é",
        r"\\x00ff",
    ],
    [
        "f",
        r"\N",
        "NaN",
        "-2",
        '{"a": [1, 2.50]}',
        "NaN",
        r'q"\\k\t\n\r\b\f\v\x',
        "24:00:00+02",
        "0044-03-15 10:00:00 BC",
        "infinity",
        r"\N",
        r"\N",
        r"\\x",
    ],
    [
        "x",
        "12345-06-07",
        r"\N",
        "9223372036854775807",
        r"\N",
        r"\N",
        "",
        r"\N",
        "-infinity",
        "0001-01-01 00:00:00+00 BC",
        r"\N",
        r"a\\",
        r"\N",
    ],
    [
        r"\N",
        "infinity",
        "1e-300",
        "0",
        "[]",
        "-0.000",
        "\x01\x1f\x7f\u2028",
        "00:00:00",
        r"\N",
        r"\N",
        r"\N",
        r"\\N",
        r"\N",
    ],
    # Escapes where PostgreSQL never writes one: each kind's Python encoder decides.
    [
        "t",
        r"2026-01-01\x",
        "Infinity",
        r"1\\",
        "null",
        r"1\\2",
        "\\",
        "10:00:00",
        r"2026\\-01-01 00:00:00",
        r"2026 01\\",
        r"u\\",
        "tab\\",
        r"\\x41",
    ],
]
LINES = ["\t".join(fields) for fields in FIELDS]


def source(key):
    return RowSource(None, "t", KINDS, key)


@pytest.mark.parametrize("key", [["i"], ["s", "i"], []], ids=["int-key", "two-keys", "no-key"])
def test_encoded_copy_lines_are_the_same(key):
    names = sorted(KINDS)
    chunk = "\n".join(LINES).encode()

    def quote(name):
        return name

    native = postgresql._NativeRows(speedups.native.encode_rows, quote, names, source(key))
    compiled = native.chunk(chunk)
    pure = postgresql._RowEncoder(quote, names, source(key)).chunk(chunk)
    assert compiled == pure
    assert len(pure[1]) == len(LINES)
    rows = [codec.parse_row_exact(row) for row in pure[1][:4]]  # valid JSON, as PostgreSQL writes
    assert rows[1]["s"] == 'q"\\k\t\n\r\b\f\x0bx'
    assert [row["x"] for row in rows] == ["é", None, "a\\", "\\N"]


def outcome(encode, chunk):
    try:
        return encode(chunk)
    except Exception as exc:  # the same error on both paths is the same outcome
        return type(exc)


def test_random_copy_text_is_encoded_the_same():
    # Any UTF-8 text (what the export's COPY sends, see _in_utf8) in any column
    # of a kind whose Python encoder takes any text: escapes, lone backslashes,
    # quotes, control bytes, \N inside a value, odd booleans and timestamps.
    rng = random.Random(11)
    tokens = [
        "a", "é", "😀", "\\\\", "\\n", "\\t", "\\r", "\\b", "\\f", "\\v", "\\x", "\\N",
        '"', "\x01", "\x1f", "\x7f", " ", "t", "f", "0", "2026-01-01 00:00:00", " BC",
        "+00", "\\",
    ]  # fmt: skip
    raw_tokens = [t.encode() for t in tokens]
    kinds = {
        "b": "boolean", "d": "date", "i": "integer", "n": "decimal", "s": "string",
        "ts": "datetime", "tz": "datetime_tz", "u": "uuid", "x": "text",
    }  # fmt: skip
    names = sorted(kinds)
    for key in (["s"], ["i", "x"], []):
        table = RowSource(None, "t", kinds, key)
        native = postgresql._NativeRows(speedups.native.encode_rows, str, names, table)
        pure = postgresql._RowEncoder(str, names, table)
        for _ in range(600):
            lines = [
                b"\t".join(
                    b"".join(rng.choice(raw_tokens) for _ in range(rng.randrange(0, 5)))
                    for _ in names
                )
                for _ in range(rng.randrange(1, 4))
            ]
            chunk = b"\n".join(lines)
            assert outcome(native.chunk, chunk) == outcome(pure.chunk, chunk), chunk


def test_a_memo_may_hold_only_bytes():
    kinds = {"j": "json"}
    rows = postgresql._NativeRows(
        speedups.native.encode_rows, str, ["j"], RowSource(None, "t", kinds, [])
    )
    rows.plan[3][0][b"{}"] = "not bytes"
    with pytest.raises(TypeError, match="memo"):
        rows.chunk(b"{}")


def test_cut_positions_refuses_numbers_wider_than_64_bits():
    with pytest.raises(OverflowError):
        speedups.native.cut_positions([b"[1]"], 1, 2**64)
    with pytest.raises(OverflowError):
        speedups.native.cut_positions([b"[1]"], -1, 1)


def test_the_compiled_functions_take_bytes_only():
    # A bytearray could change while they run without the GIL.
    with pytest.raises(TypeError):
        speedups.native.differing_rows(bytearray(b"a"), b"a", b"\n")
    native = postgresql._NativeRows(
        speedups.native.encode_rows, str, ["s"], RowSource(None, "t", {"s": "text"}, [])
    )
    with pytest.raises(TypeError):
        native.chunk(bytearray(b"a"))


def test_a_line_with_the_wrong_number_of_fields_is_an_error():
    names = sorted(KINDS)
    rows = postgresql._NativeRows(speedups.native.encode_rows, str, names, source(["i"]))
    with pytest.raises(ValueError, match="COPY line"):
        rows.chunk(LINES[0].encode() + b"\textra")
    with pytest.raises(ValueError, match="COPY line"):
        rows.chunk(b"t\t2026-11-28")


def test_an_empty_line_is_one_empty_string():
    text = RowSource(None, "t", {"s": "text"}, [])
    rows = postgresql._NativeRows(speedups.native.encode_rows, str, ["s"], text)
    assert rows.chunk(b"") == ([b'  {\n    "s": ""\n  }'], [b'  {\n    "s": ""\n  }'])


# copy_out: COPY TO STDOUT read through psycopg2's own libpq, on the real server.

ODD_TEXTS = ["plain", "tab\there", "new\nline", "back\\slash", "é — ü", "", "x" * 70_000]


@pytest.fixture
def pg_conn(pg_url):
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id integer PRIMARY KEY, s text)")
        conn.execute(
            sa.text("INSERT INTO t VALUES (:id, :s)"),
            [{"id": i, "s": ODD_TEXTS[i % len(ODD_TEXTS)]} for i in range(1, 301)],
        )
        conn.commit()
        conn.exec_driver_sql("SELECT 1")  # in a transaction again, as an export reads
        yield conn
    engine.dispose()


def copy_expert_lines(conn, sql):
    out = io.BytesIO()
    conn.connection.dbapi_connection.cursor().copy_expert(sql, out)
    return out.getvalue()


@pytest.mark.parametrize("limit", [1, 1000, 1 << 18])
def test_copy_out_gives_psycopg2s_bytes_in_runs_of_whole_rows(pg_conn, limit):
    sql = "COPY (SELECT * FROM t ORDER BY id) TO STDOUT"
    chunks = []
    speedups.native.copy_out(
        pg_conn.connection.dbapi_connection.pgconn_ptr,
        postgresql._libpq(),
        sql.encode(),
        limit,
        chunks.append,
    )
    assert b"\n".join(chunks) + b"\n" == copy_expert_lines(pg_conn, sql)
    if limit == 1:  # every row is a run of its own
        assert len(chunks) == 300
    else:
        assert len(chunks) < 300
        assert all(len(chunk) + 1 >= limit for chunk in chunks[:-1])


def test_copy_out_of_nothing_calls_no_sink(pg_conn):
    chunks = []
    postgresql._copy_out(
        pg_conn, "COPY (SELECT 1 WHERE false) TO STDOUT", postgresql._libpq(), chunks.append
    )
    assert chunks == []
    assert pg_conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 300


def test_copy_out_raises_what_psycopg2_raises(pg_conn):
    with pytest.raises(psycopg2.errors.UndefinedTable, match=r'^relation "missing" does not'):
        postgresql._copy_out(
            pg_conn, "COPY missing TO STDOUT", postgresql._libpq(), lambda lines: None
        )
    assert pg_conn.invalidated


def test_copy_out_reports_an_error_after_some_rows(pg_conn):
    chunks = []
    sql = "COPY (SELECT 1 / (100 - i) FROM generate_series(1, 200) i) TO STDOUT"
    with pytest.raises(psycopg2.errors.DivisionByZero, match=r"^division by zero$"):
        postgresql._copy_out(pg_conn, sql, postgresql._libpq(), chunks.append)
    assert chunks == [b"\n".join([b"0"] * 98 + [b"1"])]  # the rows before the error
    assert pg_conn.invalidated


@pytest.mark.parametrize(
    "sql", ["COPY (SELECT 1) TO STDOUT; COPY (SELECT 2) TO STDOUT", "COPY t TO STDOUT; SELECT 1/0"]
)
def test_copy_out_runs_one_statement_only(pg_conn, sql):
    # Nothing may follow the COPY unseen, be it another COPY or a failing statement.
    with pytest.raises(psycopg2.errors.SyntaxError, match="multiple commands"):
        postgresql._copy_out(pg_conn, sql, postgresql._libpq(), print)
    assert pg_conn.invalidated


def test_copy_out_reports_a_lost_connection(pg_conn, pg_url):
    pid = pg_conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    killer = sa.create_engine(pg_url)

    def kill_once(lines):
        with killer.connect() as other:
            other.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")

    sql = "COPY (SELECT i, repeat('x', 1000) FROM generate_series(1, 100000) i) TO STDOUT"
    try:
        with pytest.raises(psycopg2.OperationalError) as raised:
            postgresql._copy_out(pg_conn, sql, postgresql._libpq(), kill_once)
    finally:
        killer.dispose()
    # libpq's own words, as psycopg2 raises them: the server's, or its own
    # if the socket closed first.
    assert str(raised.value).splitlines()[0] in {
        "terminating connection due to administrator command",
        "server closed the connection unexpectedly",
    }
    assert pg_conn.invalidated


def test_copy_out_stops_when_the_sink_fails(pg_conn):
    def refuse(lines):
        raise KeyError("stop")

    with pytest.raises(KeyError, match="stop"):
        postgresql._copy_out(pg_conn, "COPY t TO STDOUT", postgresql._libpq(), refuse)
    assert pg_conn.invalidated  # mid-COPY: never handed back to the pool


def test_copy_out_refuses_a_connection_outside_a_transaction(pg_url):
    # It would read another moment than the export's other tables.
    dsn = sa.make_url(pg_url).set(drivername="postgresql").render_as_string(False)
    with psycopg2.connect(dsn) as raw:
        raw.autocommit = True
        with pytest.raises(RuntimeError, match="not in a transaction"):
            speedups.native.copy_out(
                raw.pgconn_ptr, postgresql._libpq(), b"COPY (SELECT 1) TO STDOUT", 1, print
            )


def test_copy_out_checks_its_arguments(pg_conn):
    pgconn, libpq = pg_conn.connection.dbapi_connection.pgconn_ptr, postgresql._libpq()
    with pytest.raises(ValueError, match="10 function addresses"):
        speedups.native.copy_out(pgconn, libpq[:2], b"COPY t TO STDOUT", 1, print)
    with pytest.raises(ValueError, match="no connection"):
        speedups.native.copy_out(0, libpq, b"COPY t TO STDOUT", 1, print)
    with pytest.raises(ValueError, match="at least 1 byte"):
        speedups.native.copy_out(pgconn, libpq, b"COPY t TO STDOUT", 0, print)
    with pytest.raises(ValueError, match="NUL"):
        speedups.native.copy_out(pgconn, libpq, b"COPY t TO STDOUT\0; DROP TABLE t", 1, print)
    assert pg_conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 300


def test_copy_out_refuses_rows_that_are_not_text_lines(pg_conn):
    with pytest.raises(ValueError, match="without its newline"):
        postgresql._copy_out(
            pg_conn, "COPY (SELECT 1) TO STDOUT (FORMAT binary)", postgresql._libpq(), print
        )
    assert pg_conn.invalidated


def test_an_export_under_a_wait_callback_reads_without_copy(pg_url, tmp_path, monkeypatch):
    # gevent and eventlet (a wait callback) make psycopg2's connections
    # non-blocking, and psycopg2 then refuses COPY: rows are selected instead.
    copies = []
    for name in ("_copy", "_copy_out"):
        original = getattr(postgresql, name)
        monkeypatch.setattr(
            postgresql, name, lambda *args, f=original, n=name: copies.append(n) or f(*args)
        )
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id integer PRIMARY KEY, s text, d numeric)")
        conn.exec_driver_sql(
            "INSERT INTO t SELECT i, 'é' || i, i / 7.0 FROM generate_series(1, 500) i"
        )
    first = export_snapshot(engine, tmp_path / "direct")
    assert copies == ["_copy_out"]
    psycopg2.extensions.set_wait_callback(psycopg2.extras.wait_select)
    try:
        second = export_snapshot(engine, tmp_path / "waited")
    finally:
        psycopg2.extensions.set_wait_callback(None)
        engine.dispose()
    assert copies == ["_copy_out"]
    assert first.rows == second.rows == {"t": 500}
    table = "tables/t.json"
    assert (tmp_path / "direct" / table).read_bytes() == (tmp_path / "waited" / table).read_bytes()


def test_a_libpq_error_reads_as_psycopg2s_whatever_its_bytes():
    error = postgresql._driver_error(b"FATAL:  connexion ferm\xe9e\n\tpar le serveur\n", None)
    assert type(error) is psycopg2.OperationalError
    assert str(error).splitlines()[0] == "connexion ferm\ufffde"
    error = postgresql._driver_error(b'ERROR:  relation "x" does not exist\n', "42P01")
    assert type(error) is psycopg2.errors.UndefinedTable
    assert str(error) == 'relation "x" does not exist'
    assert type(postgresql._driver_error(b"", "XX999")) is psycopg2.OperationalError
