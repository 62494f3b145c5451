"""Every column type, both ways, value <-> JSON: the one place an encoding lives.

A column's *kind* is decided once from its reflected SQLAlchemy type and written
to the manifest, so a snapshot can be decoded without the database that made it.
Encoders turn driver values into JSON-native values that keep every bit of the
original; decoders give back the Python types SQLAlchemy returns for the column.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import re
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import types as sqltypes

from backend.errors import CodecError

Encoder = Callable[[Any], Any]
Decoder = Callable[[Any], Any]

#: orjson options for a data file's rows: the bytes git diffs, line by line.
PRETTY = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
#: orjson options for keys, hashes and comparisons.
COMPACT = orjson.OPT_SORT_KEYS

_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
# ISO 8601 durations without years or months, as Python writes them ("-P1DT0H0M0S")
# and as PostgreSQL does, with a sign on any part ("P-1D", "P1DT-2H").
_DURATION_RE = re.compile(
    r"^(?P<sign>-)?P(?:(?P<days>-?\d+)D)?"
    r"(?:T(?:(?P<hours>-?\d+)H)?(?:(?P<minutes>-?\d+)M)?(?:(?P<seconds>-?\d+(?:\.\d+)?)S)?)?$"
)


def kind_of(
    sa_type: sqltypes.TypeEngine[Any],
    unknown: str,
    extra: tuple[tuple[type[Any], str], ...] = (),
) -> str:
    """The codec kind for a reflected column type.

    `unknown` is the dialect's fallback, `extra` its own types that SQLAlchemy's
    generic hierarchy misses (PostgreSQL's INTERVAL is not an Interval).
    """
    if isinstance(sa_type, sqltypes.ARRAY):
        return "array:" + kind_of(sa_type.item_type, unknown, extra)
    checks: tuple[tuple[type[Any], str], ...] = (
        *extra,
        (sqltypes.Boolean, "boolean"),
        (sqltypes.Integer, "integer"),
        (sqltypes.Float, "float"),  # before Numeric: Float is a Numeric
        (sqltypes.Numeric, "decimal"),
        (sqltypes.DateTime, "datetime"),
        (sqltypes.Date, "date"),
        (sqltypes.Time, "time"),
        (sqltypes.Interval, "interval"),
        (sqltypes._Binary, "bytes"),
        (sqltypes.Uuid, "uuid"),
        (sqltypes.JSON, "json"),
        (sqltypes.String, "string"),
    )
    for sa_class, kind in checks:
        if isinstance(sa_type, sa_class):
            if kind == "datetime" and getattr(sa_type, "timezone", False):
                return "datetime_tz"
            if kind == "float" and getattr(sa_type, "asdecimal", False):
                return "decimal"
            return kind
    return unknown


# --- encoding ---------------------------------------------------------------


def _encode_decimal(value: Decimal) -> str:
    return format(value, "f")  # never exponent notation: 1E-8 reads 0.00000001


def _encode_time(value: dt.time | str) -> str:
    return _full_offset(value) if isinstance(value, str) else value.isoformat()


def _full_offset(text: str) -> str:
    """'12:00:00+02' (PostgreSQL's timetz) as ISO 8601's '12:00:00+02:00'."""
    if len(text) > 3 and text[-3] in "+-" and text[-2:].isdigit():
        return text + ":00"
    return text


def _encode_float(value: float) -> float | str:
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _encode_datetime(value: dt.datetime | str) -> str:
    # Aware values are normalised to UTC so the session or machine zone never
    # changes the bytes; naive ones are kept as they are.
    if isinstance(value, str):
        return _iso_text(value)
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC)
    return value.isoformat()


def _iso_text(value: str) -> str:
    """A database's own date/time text (read in UTC) in ISO 8601 form.

    PostgreSQL's text keeps what Python's types cannot: 'infinity', BC dates and
    years past 9999. Finite values only need the 'T' and a full '+00:00' offset.
    """
    if value[:1].isdigit() and not value.endswith(" BC"):
        value = value.replace(" ", "T", 1)
        if value[-3:-2] in "+-" and value[-3:].lstrip("+-").isdigit() and "T" in value:
            value += ":00"
    return value


def _encode_date(value: dt.date | str) -> str:
    return _iso_text(value) if isinstance(value, str) else value.isoformat()


def _encode_interval(value: dt.timedelta | str) -> str:
    if isinstance(value, str):  # PostgreSQL's own ISO 8601 text: months survive
        return value
    micros = (value.days * 86400 + value.seconds) * 1_000_000 + value.microseconds
    sign = "-" if micros < 0 else ""
    days, rest = divmod(abs(micros), 86_400_000_000)
    hours, rest = divmod(rest, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    seconds, micro = divmod(rest, 1_000_000)
    secs = f"{seconds}.{micro:06d}".rstrip("0").rstrip(".") if micro else str(seconds)
    return f"{sign}P{days}DT{hours}H{minutes}M{secs}S"


def _encode_bytes(value: bytes | memoryview) -> str:
    return base64.b64encode(bytes(value)).decode("ascii")


def _reject_constant(name: str) -> Any:
    raise CodecError(f"JSON value holds {name}, which JSON cannot represent")


# The column is read as text so numbers keep their exact digits ("12.50" is not
# 12.5): each number becomes an orjson.Fragment that is written back verbatim.
_EXACT_JSON = json.JSONDecoder(
    parse_float=orjson.Fragment, parse_int=orjson.Fragment, parse_constant=_reject_constant
)


def _parse_exact(text: str) -> Any:
    # scan_once is the C scanner behind JSONDecoder.decode, without its
    # per-call Python overhead (a third of the cost on small documents).
    text = text.strip()
    try:
        value, end = _EXACT_JSON.scan_once(text, 0)  # type: ignore[attr-defined]
    except StopIteration:
        end = -1
    if end != len(text):
        raise CodecError(f"not a JSON document: {text[:60]!r}")
    return value


#: The key that wraps a JSON document which could otherwise be misread.
WRAP = "$json"


def _wrap(document: Any) -> Any:
    """A JSON document as written: itself, unless it could be mistaken for SQL NULL
    (the JSON value null) or for this very wrapping ({"$json": ...})."""
    if document is None or (isinstance(document, dict) and len(document) == 1 and WRAP in document):
        return {WRAP: document}
    return document


def _unwrap(value: Any) -> Any:
    if isinstance(value, dict) and len(value) == 1 and WRAP in value:
        return value[WRAP]
    return value


def _encode_json(value: Any) -> Any:
    if value is None:  # SQL NULL; the JSON value null arrives as the text "null"
        return None
    return _wrap(_parse_exact(value if isinstance(value, str) else json.dumps(value)))


def _encode_any(value: Any) -> Any:
    """SQLite's dynamic typing: keep the storage class, tag what JSON would blur."""
    if isinstance(value, bytes | memoryview):
        return {"base64": _encode_bytes(value)}
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": _encode_float(value)}
    return value


def _encode_text(value: Any) -> Any:
    return value if value is None or isinstance(value, str) else str(value)


_ENCODERS: dict[str, Encoder | None] = {
    "integer": None,
    "boolean": None,
    "string": None,
    "decimal": _encode_decimal,
    "float": _encode_float,
    "datetime": _encode_datetime,
    "datetime_tz": _encode_datetime,
    "date": _encode_date,
    "time": _encode_time,
    "interval": _encode_interval,
    "bytes": _encode_bytes,
    "uuid": str,
    "json": _encode_json,
    "any": _encode_any,
    "text": _encode_text,
}


def encoder(kind: str) -> Encoder | None:
    """A function from driver value to JSON value; None where the value is already JSON."""
    if kind.startswith("array:"):
        inner = encoder(kind.removeprefix("array:"))
        return _array_codec(inner)
    try:
        enc = _ENCODERS[kind]
    except KeyError:
        raise CodecError(f"unknown column kind {kind!r}") from None
    if enc is None or kind in ("json", "any"):
        return enc
    return _skip_none(enc)


def _skip_none(func: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def apply(value: Any) -> Any:
        return None if value is None else func(value)

    return apply


def _array_codec(inner: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    def apply(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, list | tuple):
            return [apply(item) for item in value]
        return value if inner is None else inner(value)

    return apply


# --- encoding from a database's text rendering -------------------------------
#
# The fast read path (PostgreSQL's COPY) hands over each value as the text the
# database prints. These functions turn that text straight into the JSON bytes
# the slower, value-based path above writes for the same value, without making
# a Python object in between.

TextEncoder = Callable[[bytes], bytes]

_JSON_UNSAFE = re.compile(rb'["\\\x00-\x1f]')
_NON_FINITE_TEXT = {b"NaN": b'"NaN"', b"Infinity": b'"Infinity"', b"-Infinity": b'"-Infinity"'}
#: Indent of a field's value inside a row of a data file.
_FIELD_INDENT = b"\n    "


def _text_string(raw: bytes) -> bytes:
    if _JSON_UNSAFE.search(raw) is None:
        return b'"' + raw + b'"'
    return orjson.dumps(raw.decode("utf-8"))


def _text_quoted(raw: bytes) -> bytes:
    return b'"' + raw + b'"'


def _text_float(raw: bytes) -> bytes:
    return _NON_FINITE_TEXT.get(raw) or orjson.dumps(float(raw))


def _text_timestamp(raw: bytes) -> bytes:
    if raw.endswith(b" BC") or not raw[:1].isdigit():  # infinity, or before year 1
        return b'"' + raw + b'"'
    return b'"' + raw.replace(b" ", b"T", 1) + b'"'


def _text_time(raw: bytes) -> bytes:
    return b'"' + _full_offset(raw.decode("ascii")).encode("ascii") + b'"'


def _text_timestamptz(raw: bytes) -> bytes:
    # Read in UTC, so the offset is always a bare "+00": ISO 8601 wants "+00:00".
    if raw.endswith(b" BC") or not raw[:1].isdigit():
        return b'"' + raw + b'"'
    return b'"' + raw.replace(b" ", b"T", 1) + b':00"'


def _text_bytes(raw: bytes) -> bytes:
    # bytea_output = 'hex': \x followed by two hex digits per byte.
    return b'"' + base64.b64encode(bytes.fromhex(raw[2:].decode("ascii"))) + b'"'


def _text_json(raw: bytes) -> bytes:
    value = _wrap(_parse_trusted(raw))
    return orjson.dumps(value, option=PRETTY).replace(b"\n", _FIELD_INDENT)


def _parse_trusted(raw: bytes) -> Any:
    """A JSON document parsed by orjson where that provably keeps its digits.

    orjson reads numbers as floats and ints, which loses digits ("12.50") in
    general. But if orjson writes the parsed value back as exactly the text it
    came from (PostgreSQL's jsonb text, with its ", " and ": " separators), then
    every number printed the same, and the fast parse is as exact as the slow
    one. Anything else (json with its own spacing, long or padded numbers,
    separators inside strings) takes the exact parser: a false alarm costs time,
    never a digit.
    """
    if _PADDED_NUMBER.search(raw) is None:
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
        else:
            if orjson.dumps(value) == raw.replace(b", ", b",").replace(b": ", b":"):
                return value
    return _parse_exact(raw.decode("utf-8"))


# A fraction ending in 0 ("12.50"), which orjson would print shorter.
_PADDED_NUMBER = re.compile(rb"\.[0-9]*0(?![0-9])")


def _text_boolean(raw: bytes) -> bytes:
    return b"true" if raw == b"t" else b"false"


_TEXT_ENCODERS: dict[str, TextEncoder | None] = {
    "integer": None,
    "boolean": _text_boolean,
    "string": _text_string,
    "text": _text_string,
    "decimal": _text_quoted,
    "float": _text_float,
    "datetime": _text_timestamp,
    "datetime_tz": _text_timestamptz,
    "date": _text_quoted,
    "time": _text_time,
    "interval": _text_quoted,
    "uuid": _text_quoted,
    "bytes": _text_bytes,
    "json": _text_json,
}


#: Kinds whose database text is the content of their JSON string, as it stands.
TEXT_QUOTED = frozenset({"decimal", "date", "interval", "uuid"})


def has_text_encoder(kind: str) -> bool:
    """Whether values of this kind can be encoded from the database's text."""
    return kind in _TEXT_ENCODERS


def text_encoder(kind: str) -> TextEncoder | None:
    """Database text -> JSON bytes for one kind; None where the text is already JSON."""
    return _TEXT_ENCODERS[kind]


# --- to the database's own text input -----------------------------------------
#
# The fast write path (PostgreSQL's COPY FROM) takes every value as text. These
# functions give that text for a snapshot's JSON value; JSON columns come parsed
# with Decimal numbers (see `parse_row_exact`) so their digits survive.


def _exact_int(text: str) -> int | Decimal:
    # orjson writes integers of 64 bits (signed or not); wider ones travel as Decimal.
    value = int(text)
    return value if -(1 << 63) <= value < (1 << 64) else Decimal(text)


_RESTORE_JSON = json.JSONDecoder(parse_float=Decimal, parse_int=_exact_int)


def parse_row_exact(raw: bytes) -> dict[str, Any]:
    """A row whose JSON columns must keep every digit: numbers with a fraction become Decimal."""
    row: dict[str, Any] = _RESTORE_JSON.decode(raw.decode("utf-8"))
    return row


def _exact_number(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value))
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def dumps_exact(value: Any, option: int = 0) -> str:
    """JSON text of a value from `parse_row_exact`, numbers with their exact digits."""
    return orjson.dumps(value, default=_exact_number, option=option).decode("utf-8")


def _db_text_json(value: Any) -> str:
    return dumps_exact(_unwrap(value))


def _db_text_float(value: float | Decimal | str) -> str:
    return value if isinstance(value, str) else repr(float(value))


def _db_text_bytes(value: str) -> str:
    return "\\x" + base64.b64decode(value).hex()


def _array_literal(inner: Callable[[Any], str]) -> Callable[[Any], str]:
    def literal(value: list[Any]) -> str:
        items = []
        for item in value:
            if item is None:
                items.append("NULL")
            elif isinstance(item, list):
                items.append(literal(item))
            else:
                text = inner(item).replace("\\", "\\\\").replace('"', '\\"')
                items.append(f'"{text}"')
        return "{" + ",".join(items) + "}"

    return literal


_DB_TEXT: dict[str, Callable[[Any], str]] = {
    "integer": str,
    "boolean": lambda value: "t" if value else "f",
    "float": _db_text_float,
    "bytes": _db_text_bytes,
    "json": _db_text_json,
}


def db_text(kind: str) -> Callable[[Any], str]:
    """JSON value (never None) -> the database's text input for a column of this kind."""
    if kind.startswith("array:"):
        return _array_literal(db_text(kind.removeprefix("array:")))
    if kind == "any":
        raise CodecError("SQLite values of no declared type have no text form")
    return _DB_TEXT.get(kind, str)


def json_columns(kinds: dict[str, str]) -> list[str]:
    """The columns holding JSON documents, whose numbers need `parse_row_exact`."""
    return [name for name, kind in kinds.items() if kind.removeprefix("array:") == "json"]


def parse_row(raw: bytes, documents: list[str]) -> dict[str, Any]:
    """A row as Python's json reads it (exact integers, float fractions), with the
    JSON documents in `documents` parsed exactly (Decimal) for writing them back."""
    if not documents:
        row: dict[str, Any] = orjson.loads(raw)
        return row
    row = parse_row_exact(raw)  # one parse; then plain numbers outside the documents
    for name, value in row.items():
        if isinstance(value, Decimal) and name not in documents:
            row[name] = int(value) if value.as_tuple().exponent == 0 else float(value)
    return row


# --- decoding ---------------------------------------------------------------


def _decode_float(value: float | int | str) -> float:
    if isinstance(value, str):
        try:
            return _NON_FINITE[value]
        except KeyError:
            raise CodecError(f"not a float: {value!r}") from None
    return float(value)


def _decode_interval(value: str) -> dt.timedelta | str:
    match = _DURATION_RE.match(value)
    if not match:
        return value  # months or years: only the database can hold it exactly
    delta = dt.timedelta(
        days=int(match["days"] or 0),
        hours=int(match["hours"] or 0),
        minutes=int(match["minutes"] or 0),
        microseconds=int(Decimal(match["seconds"] or 0) * 1_000_000),
    )
    return -delta if match["sign"] else delta


def _decode_any(value: Any) -> Any:
    if isinstance(value, dict):
        if "base64" in value:
            return base64.b64decode(value["base64"])
        if "float" in value:
            return _decode_float(value["float"])
    return value


_DECODERS: dict[str, Decoder | None] = {
    "integer": None,
    "boolean": None,
    "string": None,
    "text": None,
    "json": _unwrap,
    "decimal": Decimal,
    "float": _decode_float,
    "datetime": dt.datetime.fromisoformat,
    "datetime_tz": dt.datetime.fromisoformat,
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "interval": _decode_interval,
    "bytes": base64.b64decode,
    "uuid": uuid.UUID,
    "any": _decode_any,
}


def decoder(kind: str) -> Decoder | None:
    """A function from JSON value back to the Python value; None for identity."""
    if kind.startswith("array:"):
        return _array_codec(decoder(kind.removeprefix("array:")))
    try:
        dec = _DECODERS[kind]
    except KeyError:
        raise CodecError(f"unknown column kind {kind!r}") from None
    return None if dec is None else _skip_none(dec)


def json_default(value: Any) -> Any:
    """orjson's `default` for decoded rows (API responses): the snapshot's encoding."""
    if isinstance(value, Decimal):
        return _encode_decimal(value)
    if isinstance(value, bytes | memoryview):
        return _encode_bytes(value)
    if isinstance(value, dt.timedelta):
        return _encode_interval(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


# --- rows -------------------------------------------------------------------


def pretty_row(row: dict[str, Any]) -> bytes:
    """One row as it stands in a data file: one line per field, indented two more."""
    return b"  " + orjson.dumps(row, option=PRETTY).replace(b"\n", b"\n  ")


def field_parts(names: list[str]) -> list[bytes]:
    """The literal text around a row's values; `names` must be sorted.

    parts[0] + v0 + parts[1] + ... + v(n-1) + parts[n], with v the fields' JSON
    bytes, equals `pretty_row` of the same values. A database that can print
    the values itself can build whole rows from these parts.
    """
    if not names:
        return [b"  {}"]
    fields = [b"    " + orjson.dumps(name) + b": " for name in names]
    return [b"  {\n" + fields[0], *(b",\n" + f for f in fields[1:]), b"\n  }"]


def field_lines(names: list[str], quoted: list[bool] | None = None) -> bytes:
    """A %-template for one row from its fields' JSON bytes; `names` must be sorted.

    Fill it with `template % tuple(values)`; the result equals `pretty_row` of the
    same values. Where `quoted` is true, the template supplies the JSON string's
    quotes itself, so a TEXT_QUOTED value can go in as the database printed it.
    """
    parts = [part.replace(b"%", b"%%") for part in field_parts(names)]
    marks = quoted or [False] * len(names)
    holes = [b'"%b"' if mark else b"%b" for mark in marks]
    return parts[0] + b"".join(h + p for h, p in zip(holes, parts[1:], strict=True))


def canonical(value: Any) -> bytes:
    """Compact, key-sorted JSON: the identity of a key or a row."""
    return orjson.dumps(value, option=COMPACT)
