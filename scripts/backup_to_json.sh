#!/usr/bin/env bash
# The daily export, for cron or the systemd timer: `jsonsnap schedule install`
# writes the crontab line that runs it. It works from the project's folder with
# its .venv, pushes when a remote is set, appends timestamped lines to
# logs/backup.log, exits non-zero on failure, and never runs twice at once.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
mkdir -p logs
log() { printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >> logs/backup.log; }

exec 9>logs/backup.lock
if ! flock -n 9; then
  log "another backup is still running; this one is skipped"
  exit 75
fi

args=(export)
# --git-dir: before the first export, snapshots/ is a plain folder of the project,
# and `git -C` would find the project's own remote.
if git --git-dir="${JSONSNAP_REPO:-snapshots}/.git" remote get-url origin > /dev/null 2>&1; then
  args+=(--push)
fi

log "export started"
output=$(.venv/bin/jsonsnap "${args[@]}" 2>&1)
status=$?
while IFS= read -r line; do
  [ -n "$line" ] && log "$line"
done <<< "$output"
log "export finished with exit code $status"
exit "$status"
