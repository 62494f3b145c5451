#!/usr/bin/env python3
"""The user's original cron line, kept working: `migrate_db_to_json.py --output-dir DIR`.

It is `jsonsnap export --repo DIR`: the output directory becomes (or already is)
the snapshot git repository. Every other export option passes through.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.cli import main


def _translate(argv: list[str]) -> list[str]:
    args = ["export"]
    rest = iter(argv)
    for arg in rest:
        if arg == "--output-dir":
            args.append("--repo")  # with its value, if any: click refuses a missing one
        elif arg.startswith("--output-dir="):
            args.append("--repo=" + arg.split("=", 1)[1])
        else:
            args.append(arg)
    return args


if __name__ == "__main__":
    main(args=_translate(sys.argv[1:]), prog_name="migrate_db_to_json.py")
