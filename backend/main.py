"""The admin and materials API (FastAPI): the hybrid approach of the user's note.

Every route calls the same library function as the CLI. Admin routes need
`Authorization: Bearer <JSONSNAP_ADMIN_TOKEN>`; with no token configured they are
off (503), never open. No error response carries a traceback or a database URL:
library errors are one-line messages with their passwords already masked, and
anything unexpected is a bare "internal error".
"""

from __future__ import annotations

import hmac
import logging
import os
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException

from backend.codec import dumps_exact, json_default
from backend.config import Settings
from backend.db import make_engine
from backend.errors import (
    BadInput,
    DatabaseFailure,
    JsonsnapError,
    LockTimeout,
    SnapshotCorrupt,
)
from backend.export import export_snapshot
from backend.loader import DataUnavailable, load_materials_data
from backend.snapshot import diff_snapshots, list_snapshots

log = logging.getLogger("jsonsnap.api")

app = FastAPI(title="jsonsnap", summary="Database snapshots in git: admin and materials API")

_STATUS: list[tuple[type[JsonsnapError], int]] = [
    (BadInput, 400),
    (LockTimeout, 409),
    (DataUnavailable, 503),
    (DatabaseFailure, 503),
    (SnapshotCorrupt, 500),
    (JsonsnapError, 500),
]
_engines: dict[str, Engine] = {}


def _engine(url: str) -> Engine:
    if url not in _engines:
        _engines[url] = make_engine(url)
    return _engines[url]


def require_admin(authorization: Annotated[str | None, Header()] = None) -> None:
    """Bearer token check, in constant time; the same 401 whatever was wrong."""
    token = os.environ.get("JSONSNAP_ADMIN_TOKEN", "")
    if not token:
        raise HTTPException(503, "admin routes are disabled: set JSONSNAP_ADMIN_TOKEN")
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(401, "unauthorized", headers={"WWW-Authenticate": "Bearer"})


Admin = Depends(require_admin)


@app.post("/api/admin/export-to-json", dependencies=[Admin])
def export_to_json() -> dict[str, Any]:
    """Export now, through the same function and lock as the cron job (409 if it is running)."""
    settings = Settings.resolve()
    result = export_snapshot(_engine(settings.database_url), settings.repo_path, lock_timeout=0)
    return {
        "status": "success",
        "commit": result.commit,
        "changed": result.changed,
        "summary": {name: change.as_dict() for name, change in result.summary.items()},
    }


@app.get("/api/admin/snapshots", dependencies=[Admin])
def snapshots() -> list[dict[str, Any]]:
    """The snapshot history, newest first, as `jsonsnap log --json`."""
    return [info.as_dict() for info in list_snapshots(Settings.resolve().repo_path)]


@app.get("/api/admin/diff", dependencies=[Admin])
def diff(
    old: Annotated[str, Query(alias="from")],
    new: Annotated[str, Query(alias="to")] = "HEAD",
    table: Annotated[list[str] | None, Query()] = None,
) -> Response:
    """The row-level diff between two snapshots (or `db`), as `jsonsnap diff --json`."""
    settings = Settings.resolve()
    engine = _engine(settings.database_url) if "db" in (old, new) else None
    result = diff_snapshots(settings.repo_path, old, new, engine=engine, tables=table or ())
    return Response(dumps_exact(result.as_dict()), media_type="application/json")


@app.get("/api/materials")
def materials() -> Response:
    """The materials, from the database or, when it is down, from the last snapshot."""
    loaded = load_materials_data()
    return Response(
        orjson.dumps(loaded.rows, default=json_default),
        media_type="application/json",
        headers={"X-Data-Source": loaded.source.describe()},
    )


@app.exception_handler(JsonsnapError)
def _library_error(_request: Request, exc: JsonsnapError) -> JSONResponse:
    status = next(code for kind, code in _STATUS if isinstance(exc, kind))
    message = exc.reason if isinstance(exc, DatabaseFailure) else str(exc)  # no URL, even masked
    return JSONResponse({"error": message}, status_code=status)


@app.exception_handler(StarletteHTTPException)
def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return JSONResponse(
        {"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
    )


@app.exception_handler(RequestValidationError)
def _bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = "; ".join(
        f"{'.'.join(str(part) for part in error['loc'][1:])}: {error['msg']}"
        for error in exc.errors()
    )
    return JSONResponse({"error": problems or "bad request"}, status_code=400)


@app.exception_handler(Exception)
def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error")  # the details stay in the server's log
    return JSONResponse({"error": "internal error"}, status_code=500)
