#!/usr/bin/env python3
"""Benchmark jsonsnap against pg_dump on a materials-like PostgreSQL database.

Builds a database of N materials (and about 2N tags), then measures, each in
its own process so peak memory is that run's alone:
  - pg_dump --data-only (the baseline),
  - a full export, a re-export with nothing changed, an export after editing
    1% of the materials, and `git diff HEAD~1` of that last commit;
  - psql loading the pg_dump output into an empty copy of the schema, against
    `jsonsnap restore` of the last snapshot into another one;
  - resolving a date in a history of 3,650 daily snapshots.
Each export, pg_dump and the diff run --repeat times (each edit run after an
edit of its own), pg_dump alternating with the full export and the no-change
run with the edit one; the report gives the median time, the highest peak RSS,
the ratios of the medians, and the median ratio of each run to its partner.

    .venv/bin/python scripts/bench.py --rows 1000000
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
JSONSNAP = str(Path(sys.executable).parent / "jsonsnap")

SCHEMA = """
CREATE TABLE sections (id integer PRIMARY KEY, slug varchar(64) UNIQUE NOT NULL,
    label varchar(200) NOT NULL, position integer NOT NULL);
CREATE TABLE suppliers (id integer PRIMARY KEY, name varchar(200) NOT NULL,
    email varchar(200), city varchar(100));
CREATE TABLE materials (
    id integer PRIMARY KEY, reference varchar(32) UNIQUE NOT NULL, label varchar(300) NOT NULL,
    section_id integer NOT NULL REFERENCES sections(id),
    supplier_id integer REFERENCES suppliers(id),
    unit varchar(16) NOT NULL, unit_price numeric(12,2) NOT NULL, quantity numeric(12,3) NOT NULL,
    vat_rate numeric(5,2) NOT NULL, available_from date, updated_at timestamptz NOT NULL,
    attributes jsonb NOT NULL);
CREATE TABLE material_tags (material_id integer REFERENCES materials(id), tag varchar(64),
    PRIMARY KEY (material_id, tag));
"""

FILL = """
INSERT INTO sections SELECT i, 'section-' || i, 'Section n°' || i, i * 10
    FROM generate_series(1, 8) i;
INSERT INTO suppliers SELECT i, 'Fournisseur ' || i, 'contact' || i || '@example.fr', 'Besançon'
    FROM generate_series(1, 100) i;
INSERT INTO materials SELECT i, 'MAT-' || lpad(i::text, 8, '0'),
    'Matériau ' || i || ' — finition ' || (ARRAY['éco','premium','standard'])[1 + i % 3],
    1 + i % 8, CASE WHEN i % 20 = 0 THEN NULL ELSE 1 + i % 100 END,
    (ARRAY['u','m²','ml','kg','sac'])[1 + i % 5], (i % 250000) / 100.0, (i % 5000000) / 1000.0,
    (ARRAY[20.00, 10.00, 5.50])[1 + i % 3], DATE '2026-01-01' + (i % 330),
    TIMESTAMPTZ '2026-01-05 08:30:00+00' + (i % 25920000) * INTERVAL '1 second',
    jsonb_build_object('finition', (ARRAY['éco','premium','standard'])[1 + i % 3],
                       'poids_kg', (i % 400) / 4.0, 'couleur', 'gris')
    FROM generate_series(1, :n) i;
INSERT INTO material_tags SELECT i, t FROM generate_series(1, :n) i,
    unnest(ARRAY['stock', 'promo', 'éco-label']) t WHERE (i + length(t)) % 3 <> 0;
"""


def measure(label: str, argv: list[str], env: dict[str, str], stdout: int | None = None) -> dict:
    """Run one command, return wall time and peak RSS of it and its waited children."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=stdout or subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{label} failed: {' '.join(argv)}")
    return {"label": label, "seconds": wall, "peak_mb": usage.ru_maxrss / 1024}


def create_database(server: str, name: str) -> sa.Engine:
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return sa.create_engine(sa.make_url(server).set(database=name))


def build(server: str, name: str, rows: int) -> str:
    engine = create_database(server, name)
    with engine.begin() as conn:
        conn.exec_driver_sql(SCHEMA)
        for statement in FILL.strip().split(";\n"):
            conn.execute(sa.text(statement), {"n": rows} if ":n" in statement else {})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")
    engine.dispose()
    return engine.url.render_as_string(hide_password=False)


def empty_copy(server: str, name: str) -> str:
    """A database with the benchmark's schema and no rows: what a restore loads into."""
    engine = create_database(server, name)
    with engine.begin() as conn:
        conn.exec_driver_sql(SCHEMA)
    engine.dispose()
    return engine.url.render_as_string(hide_password=False)


def psql_args(url: str) -> list[str]:
    pg = sa.make_url(url)
    host, port = pg.host or "127.0.0.1", str(pg.port or 5432)
    return ["-h", host, "-p", port, "-U", pg.username or "postgres", pg.database or ""]


def median_of(results: list[dict], against: list[dict] | None = None) -> dict:
    """The median time and the highest peak of repeated runs, and with `against`
    (the runs each was paired with), the median of the pairs' ratios.

    The median, because a shared machine has slow moments that are not the
    tool's (its hypervisor steals CPU); the highest peak, because memory is a
    limit, not an average.
    """
    paired = [r["seconds"] / a["seconds"] for r, a in zip(results, against or [], strict=False)]
    return {
        "label": results[0]["label"],
        "seconds": statistics.median(r["seconds"] for r in results),
        "peak_mb": max(r["peak_mb"] for r in results),
        "runs": [r["seconds"] for r in results],
        "paired": paired,
    }


def run_exports(url: str, workdir: Path, dump_file: Path, repeat: int) -> tuple[list[dict], Path]:
    """Each export `repeat` times: full ones into fresh repositories, the others into the first."""
    repos = [workdir / f"snapshots-{i + 1}" for i in range(repeat)]
    repo = repos[0]
    env = {**os.environ, "DATABASE_URL": url, "JSONSNAP_REPO": str(repo)}
    export = [JSONSNAP, "export", "--quiet"]
    days = iter(range(2, 29))

    def at_next_day() -> list[str]:
        return [*export, "--timestamp", f"2026-11-{next(days):02d}T02:00:00Z"]

    def pg_dump() -> dict:
        with dump_file.open("wb") as out:
            dump = ["pg_dump", "--data-only", *psql_args(url)]
            return measure("pg_dump --data-only", dump, env, stdout=out.fileno())

    def full(into: Path) -> dict:
        argv = [*export, "--timestamp", "2026-11-01T02:00:00Z"]
        return measure("full export", argv, {**env, "JSONSNAP_REPO": str(into)})

    def edit() -> dict:
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE materials SET unit_price = unit_price + 1 WHERE id % 100 = 0")
            )
        engine.dispose()
        return measure("export after 1% edits", at_next_day(), env)

    def still() -> dict:
        return measure("no-change re-export", at_next_day(), env)

    # Each run beside the one it is compared with: on a shared machine speed
    # drifts over minutes, and a pair sees the same moment.
    dumps, fulls = zip(*[(pg_dump(), full(into)) for into in repos], strict=True)
    stills, edits = zip(*[(still(), edit()) for _ in range(repeat)], strict=True)
    diff = ["git", "-C", str(repo), "diff", "HEAD~1"]
    return [
        median_of(list(dumps)),
        median_of(list(fulls), against=list(dumps)),
        median_of(list(stills)),
        median_of(list(edits), against=list(stills)),
        median_of([measure("git diff HEAD~1", diff, env) for _ in range(repeat)]),
    ], repo


def run_restores(server: str, repo: Path, dump_file: Path) -> list[dict]:
    """psql loading the pg_dump output, against jsonsnap restore, into empty databases."""
    psql_target = empty_copy(server, "jsonsnap_bench_psql")
    load = ["psql", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(dump_file), *psql_args(psql_target)]
    results = [measure("psql < pg_dump output", load, dict(os.environ))]
    target = empty_copy(server, "jsonsnap_bench_restore")
    env = {**os.environ, "DATABASE_URL": target, "JSONSNAP_REPO": str(repo)}
    restore = [JSONSNAP, "restore", "--commit", "HEAD", "--yes"]
    results.append(measure("jsonsnap restore", restore, env))
    return results


def time_date_resolution(workdir: Path) -> float:
    """Seconds to resolve a date in a history of 3,650 daily snapshots."""
    from backend.snapshot import resolve_snapshot  # noqa: PLC0415 - after sys.path is set

    repo = workdir / "ten-years"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    manifest = b'{"dialect": "sqlite", "format": 1, "schema": null, "tables": {}}\n'
    stream = [b"blob\nmark :1\ndata %d\n%s\n" % (len(manifest), manifest)]
    first = 1_600_000_000
    for day in range(3650):
        stream.append(b"commit refs/heads/main\nmark :%d\n" % (day + 2))
        stream.append(b"committer b <b@b> %d +0000\ndata 3\nday\n" % (first + day * 86400))
        if day:
            stream.append(b"from :%d\n" % (day + 1))
        stream.append(b"M 100644 :1 manifest.json\n\n")
    fast_import = ["git", "-C", str(repo), "fast-import", "--quiet"]
    subprocess.run(fast_import, input=b"".join(stream), check=True)
    began = time.perf_counter()
    resolve_snapshot(repo, "2021-06-15")
    return time.perf_counter() - began


def report(rows: int, exports: list[dict], restores: list[dict], repo: Path, dump: Path) -> None:
    base = exports[0]["seconds"]
    size = sum(p.stat().st_size for p in (repo / "tables").rglob("*.json"))
    print(
        f"\n{rows:,} materials; snapshot {size / 2**20:,.0f} MiB of JSON; "
        f"pg_dump {dump.stat().st_size / 2**20:,.0f} MiB"
    )
    print(f"{'run':<26}{'seconds':>10}{'peak MB':>10}{'ratio':>9}")
    for r in exports:
        line = f"{r['label']:<26}{r['seconds']:>10.1f}{r['peak_mb']:>10.0f}"
        runs = ", ".join(f"{t:.1f}" for t in r["runs"])
        print(line + f"{r['seconds'] / base:>9.2f}  (x pg_dump; runs {runs})")
    for r in restores:
        line = f"{r['label']:<26}{r['seconds']:>10.1f}{r['peak_mb']:>10.0f}"
        print(line + f"{r['seconds'] / restores[0]['seconds']:>9.2f}  (x psql load)")
    still, edit = exports[2]["seconds"], exports[3]["seconds"]
    print(f"\n1% edit export / no-change export (medians): {edit / still:.2f}")
    for r, base_label in ((exports[1], "pg_dump"), (exports[3], "no-change export")):
        pairs = ", ".join(f"{x:.2f}" for x in r["paired"])
        middle = statistics.median(r["paired"])
        print(f"{r['label']} / the {base_label} run just before it: {middle:.2f} ({pairs})")
    commits = subprocess.run(
        ["git", "-C", str(repo), "rev-list", "--count", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    print(f"commits in the repository (no-change runs make none): {commits}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="materials (default 1,000,000)")
    parser.add_argument(
        "--server",
        default=os.environ.get(
            "TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench-work")
    parser.add_argument("--skip-restore", action="store_true", help="exports only")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each export, reported by median (default 3)"
    )
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))

    # The last run's files go first: deleting thousands of files just before
    # a timed run would charge it for the file system's bookkeeping (ext4
    # without a journal scans recently freed inodes on every file creation).
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    print(f"building {args.rows:,} materials ...", flush=True)
    url = build(args.server, "jsonsnap_bench", args.rows)
    dump = args.workdir / "dump.sql"
    exports, repo = run_exports(url, args.workdir, dump, args.repeat)
    restores = [] if args.skip_restore else run_restores(args.server, repo, dump)
    report(args.rows, exports, restores, repo, dump)
    print(
        f"resolving a date among 3,650 daily snapshots: {time_date_resolution(args.workdir):.3f} s"
    )


if __name__ == "__main__":
    main()
