#!/usr/bin/env bash
# The main job, from a fresh clone, with nothing but Python and git: demo data in
# the embedded SQLite default, three exports (the last one with nothing to commit),
# then the snapshot history and its diff.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. .venv with jsonsnap installed"
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[api]'
export PATH="$PWD/.venv/bin:$PATH"

step "2. demo data in sqlite:///data/app.db"
jsonsnap demo --force

step "3. first export"
jsonsnap init
jsonsnap export --timestamp "$(date -u -d '2 days ago' +%Y-%m-%dT02:00:00Z)"

step "4. the app changes a few rows"
python - <<'PY'
from decimal import Decimal

from backend.db import db_session
from backend.models import Material, MaterialTag

with db_session() as session:
    session.get(Material, 12).unit_price = Decimal("18.90")
    session.get(Material, 40).label = "Peinture acrylique mate — blanc cassé"
    session.delete(session.get(Material, 77))
    new = session.get(Material, 5)
    session.add(MaterialTag(material_id=new.id, tag="déstockage"))
print("changed materials 12 and 40, deleted 77, tagged 5")
PY

step "5. second export"
jsonsnap export --timestamp "$(date -u -d '1 day ago' +%Y-%m-%dT02:00:00Z)"

step "6. export again with nothing changed: no commit"
jsonsnap export
git -C snapshots rev-list --count HEAD | xargs printf 'commits in snapshots/: %s\n'

step "7. the history and the last diff"
git -C snapshots --no-pager log --stat
git -C snapshots --no-pager diff HEAD~1 -- tables
