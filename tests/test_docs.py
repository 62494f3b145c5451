"""The README is the user's manual: every command and option must be in it."""

from pathlib import Path

import click
import pytest

from backend.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _commands() -> list[tuple[str, click.Command]]:
    assert isinstance(main, click.Group)
    return sorted(main.commands.items())


@pytest.mark.parametrize(("name", "command"), _commands())
def test_every_command_is_documented(name, command):
    assert f"### `jsonsnap {name}`" in README


@pytest.mark.parametrize(
    "option",
    sorted(
        {
            opt
            for _, command in _commands()
            for param in command.params
            for opt in param.opts
            if opt.startswith("--") and opt != "--help"
        }
    ),
)
def test_every_option_is_documented(option):
    assert f"`{option}" in README


def test_readme_gives_the_two_setup_commands_first():
    first_block = README.split("```")[1]
    assert "scripts/demo.sh" in first_block
    assert "scripts/test.sh" in first_block


def test_snapshot_readme_in_the_project_is_the_one_jsonsnap_commits():
    packaged = (ROOT / "backend" / "snapshot_readme.md").read_text(encoding="utf-8")
    assert (ROOT / "snapshots" / "README.md").read_text(encoding="utf-8") == packaged
