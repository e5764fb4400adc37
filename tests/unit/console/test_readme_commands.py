"""README's command table lists what `labelloop --help` offers, every subcommand included."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from labelloop_console import cli

README = Path(__file__).parents[3] / "README.md"


def _commands_table() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| `")]


def test_every_command_and_subcommand_has_a_row() -> None:
    rows = _commands_table()
    cli._register_commands()  # what `labelloop` does before it parses: every command module
    root = typer.main.get_command(cli.app)
    assert hasattr(root, "commands")
    missing = []
    for name, command in sorted(root.commands.items()):
        mine = [r for r in rows if re.search(rf"`labelloop {re.escape(name)}\b", r)]
        if not mine:
            missing.append(name)
            continue
        if hasattr(command, "commands"):
            for sub in sorted(command.commands):
                if not any(re.search(rf"\b{re.escape(sub)}\b", r) for r in mine):
                    missing.append(f"{name} {sub}")
    assert missing == [], f"README's command table lacks: {missing}"
