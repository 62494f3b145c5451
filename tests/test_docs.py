"""The README is the user's manual: every command and option must be in it."""

from pathlib import Path

import click
import pytest

from backend.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _commands(group: click.Group = main, prefix: str = "") -> list[tuple[str, click.Command]]:
    """Every command, subcommands of groups included, by its full name ("remote set")."""
    found = []
    for name, command in sorted(group.commands.items()):
        found.append((prefix + name, command))
        if isinstance(command, click.Group):
            found += _commands(command, f"{prefix}{name} ")
    return found


@pytest.mark.parametrize(("name", "command"), [c for c in _commands() if " " not in c[0]])
def test_every_command_has_a_section(name, command):
    assert f"### `jsonsnap {name}`" in README


@pytest.mark.parametrize(("name", "command"), [c for c in _commands() if " " in c[0]])
def test_every_subcommand_is_shown(name, command):
    assert f"jsonsnap {name}" in README


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
