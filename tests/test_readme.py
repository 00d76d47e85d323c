"""README.md stays true: generated references current, set-up commands as CI runs them."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from agentos.readme import render_readme, sections

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def test_generated_sections_are_current() -> None:
    text = README.read_text(encoding="utf-8")
    assert render_readme(text) == text, "README is out of date: run `python -m agentos.readme`"


def test_every_cli_command_and_option_is_documented() -> None:
    cli = sections()["cli-reference"]
    for command in ("run", "runs", "validate", "engines"):
        assert f"### `agentos {command}`" in cli
    for option in ("--db", "--config", "--agent", "--once", "--json", "--status", "--limit"):
        assert f"`{option}`" in cli


def test_exactly_two_setup_commands_and_ci_runs_the_test_one() -> None:
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"<!-- (run|test)-command -->\n```bash\n(.+?)\n```", text, re.DOTALL)
    assert [name for name, _ in blocks] == ["run", "test"]
    for _, command in blocks:
        assert "\n" not in command.strip(), "each set-up command is one line"
    assert "agentos run agents.yaml" in blocks[0][1]
    assert "pytest" in blocks[1][1]
    extracted = subprocess.run(
        [
            "bash",
            "-c",
            "sed -n '/<!-- test-command -->/,/<!-- \\/test-command -->/p' README.md"
            " | sed -n '/^```/,/^```/p' | sed '1d;$d'",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert extracted == blocks[1][1].strip()
    assert "<!-- test-command -->" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
