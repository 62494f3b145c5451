#!/usr/bin/env bash
# The whole test suite, from nothing: a .venv with the test and API extras, then
# ruff, mypy and pytest. PostgreSQL is expected on 127.0.0.1:5432 (TEST_POSTGRES_URL
# overrides it); under CI=true its tests must run, so a stopped server is started.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[api,test]'

if [ "${CI:-}" = "true" ] && [ -z "${TEST_POSTGRES_URL:-}" ] && command -v pg_isready > /dev/null \
  && ! pg_isready -q -h 127.0.0.1 -p 5432 && [ -d /etc/postgresql ]; then
  echo "PostgreSQL is down; starting it (its tests must run under CI=true)"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start || true
  for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi

.venv/bin/ruff check backend tests scripts
.venv/bin/ruff format --check backend tests scripts
.venv/bin/mypy
.venv/bin/pytest "$@"
