"""The daily export's crontab line: print, install (idempotently), remove.

The line runs scripts/backup_to_json.sh, which does the logging and refuses to
run twice at once. Installing keeps every other line of the user's crontab and
replaces our own (found by its marker), so installing twice leaves one line.
`JSONSNAP_CRONTAB` names a file to use instead of the `crontab` command, for
tests and for systems that keep cron tables in files.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from backend.errors import BadInput, ScheduleError

MARKER = "# jsonsnap daily export"
PROJECT = Path(__file__).resolve().parent.parent
_AT = re.compile(r"^(\d{1,2}):(\d{2})$")


def cron_line(at: str = "02:00", project: Path = PROJECT) -> str:
    match = _AT.match(at.strip())
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        raise BadInput(f"--at {at!r} is not a time of day HH:MM")
    script = shlex.quote(str(project / "scripts" / "backup_to_json.sh"))
    return f"{int(match[2])} {int(match[1])} * * * {script} {MARKER}"


def install(at: str = "02:00") -> str:
    """Add (or replace) the daily line; returns it."""
    line = cron_line(at)
    _write([kept for kept in _read() if MARKER not in kept] + [line])
    return line


def remove() -> bool:
    """Remove the daily line; returns whether there was one."""
    lines = _read()
    kept = [line for line in lines if MARKER not in line]
    if len(kept) != len(lines):
        _write(kept)
    return len(kept) != len(lines)


def _read() -> list[str]:
    target = os.environ.get("JSONSNAP_CRONTAB")
    if target:
        path = Path(target)
        return path.read_text().splitlines() if path.exists() else []
    result = subprocess.run([_crontab(), "-l"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        if "no crontab" in result.stderr.lower():
            return []
        raise ScheduleError(f"crontab -l failed: {result.stderr.strip() or result.returncode}")
    return result.stdout.splitlines()


def _write(lines: list[str]) -> None:
    text = "".join(f"{line}\n" for line in lines)
    target = os.environ.get("JSONSNAP_CRONTAB")
    if target:
        path = Path(target)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(text)
        temporary.replace(path)
        return
    result = subprocess.run(
        [_crontab(), "-"], input=text, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise ScheduleError(f"crontab - failed: {result.stderr.strip() or result.returncode}")


def _crontab() -> str:
    found = shutil.which("crontab")
    if found is None:
        raise ScheduleError(
            "the crontab command is not installed; install cron, or use the systemd timer "
            "in scripts/ (see the README)"
        )
    return found
