#!/usr/bin/env python3
"""Benchmark jsonsnap against pg_dump on a materials-like PostgreSQL database.

Builds a database of N materials (and about 2N tags), then measures, each in
its own process so peak memory is that run's alone:
  - pg_dump --data-only (the baseline),
  - a full export, a re-export with nothing changed, an export after editing
    1% of the materials, and `git diff HEAD~1` of that last commit.
Prints wall time, peak RSS and the ratio of each export to pg_dump.

    .venv/bin/python scripts/bench.py --rows 1000000
"""

from __future__ import annotations

import argparse
import os
import shutil
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


def build(server: str, name: str, rows: int) -> str:
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.make_url(server).set(database=name)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(SCHEMA)
        for statement in FILL.strip().split(";\n"):
            conn.execute(sa.text(statement), {"n": rows} if ":n" in statement else {})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")
    engine.dispose()
    return url.render_as_string(hide_password=False)


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
    args = parser.parse_args()

    print(f"building {args.rows:,} materials ...", flush=True)
    url = build(args.server, "jsonsnap_bench", args.rows)
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    repo = args.workdir / "snapshots"
    env = {**os.environ, "DATABASE_URL": url, "JSONSNAP_REPO": str(repo)}
    pg = sa.make_url(url)
    dump_file = args.workdir / "dump.sql"

    results = []
    with dump_file.open("wb") as out:
        results.append(
            measure(
                "pg_dump --data-only",
                [
                    "pg_dump",
                    "--data-only",
                    "-h",
                    pg.host or "127.0.0.1",
                    "-p",
                    str(pg.port or 5432),
                    "-U",
                    pg.username or "postgres",
                    pg.database or "",
                ],
                env,
                stdout=out.fileno(),
            )
        )
    export = [JSONSNAP, "export", "--quiet"]
    results.append(measure("full export", [*export, "--timestamp", "2026-11-01T02:00:00Z"], env))
    results.append(
        measure("no-change re-export", [*export, "--timestamp", "2026-11-02T02:00:00Z"], env)
    )
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE materials SET unit_price = unit_price + 1 WHERE id % 100 = 0"))
    engine.dispose()
    results.append(
        measure("export after 1% edits", [*export, "--timestamp", "2026-11-03T02:00:00Z"], env)
    )
    results.append(measure("git diff HEAD~1", ["git", "-C", str(repo), "diff", "HEAD~1"], env))

    base = results[0]["seconds"]
    size = sum(p.stat().st_size for p in (repo / "tables").rglob("*.json"))
    print(
        f"\n{args.rows:,} materials; snapshot {size / 2**20:,.0f} MiB of JSON; "
        f"pg_dump {dump_file.stat().st_size / 2**20:,.0f} MiB"
    )
    print(f"{'run':<24}{'seconds':>10}{'peak MB':>10}{'x pg_dump':>11}")
    for r in results:
        ratio = r["seconds"] / base
        print(f"{r['label']:<24}{r['seconds']:>10.1f}{r['peak_mb']:>10.0f}{ratio:>11.2f}")
    edit, still = results[3]["seconds"], results[2]["seconds"]
    print(f"\n1% edit export / no-change export: {edit / still:.2f}")
    commits = subprocess.run(
        ["git", "-C", str(repo), "rev-list", "--count", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    print(f"commits: {commits} (the no-change re-export must not add one)")


if __name__ == "__main__":
    main()
