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
_DURATION_RE = re.compile(
    r"^(?P<sign>-)?P(?:(?P<days>\d+)D)?"
    r"(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)


def kind_of(sa_type: sqltypes.TypeEngine[Any], unknown: str) -> str:
    """The codec kind for a reflected column type; `unknown` is the dialect's fallback."""
    if isinstance(sa_type, sqltypes.ARRAY):
        return "array:" + kind_of(sa_type.item_type, unknown)
    checks: tuple[tuple[type[Any], str], ...] = (
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


def _encode_json(value: Any) -> Any:
    # The column is selected as text so numbers keep their exact digits: each
    # number becomes an orjson.Fragment that is written back verbatim.
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value)
    return json.loads(
        text,
        parse_float=orjson.Fragment,
        parse_int=orjson.Fragment,
        parse_constant=_reject_constant,
    )


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
    "decimal": str,
    "float": _encode_float,
    "datetime": _encode_datetime,
    "datetime_tz": _encode_datetime,
    "date": _encode_date,
    "time": dt.time.isoformat,
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
    whole, _, frac = (match["seconds"] or "0").partition(".")
    delta = dt.timedelta(
        days=int(match["days"] or 0),
        hours=int(match["hours"] or 0),
        minutes=int(match["minutes"] or 0),
        seconds=int(whole),
        microseconds=int((frac + "000000")[:6]),
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
    "json": None,
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


# --- rows -------------------------------------------------------------------


def pretty_row(row: dict[str, Any]) -> bytes:
    """One row as it stands in a data file: one line per field, indented two more."""
    return b"  " + orjson.dumps(row, option=PRETTY).replace(b"\n", b"\n  ")


def canonical(value: Any) -> bytes:
    """Compact, key-sorted JSON: the identity of a key or a row."""
    return orjson.dumps(value, option=COMPACT)
