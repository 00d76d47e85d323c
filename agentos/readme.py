"""The reference sections of README.md, generated from the code they describe.

The agents.yaml and config.yaml references come from the pydantic models' field
docstrings, the CLI reference from the typer app, so the README cannot drift from what
the program accepts: ``python -m agentos.readme`` rewrites the sections between their
``<!-- name -->`` markers, and a test fails while the README is out of date.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import typer

from agentos.cli import app
from agentos.spec import agents_reference_markdown, config_reference_markdown


def _param_row(param: Any) -> tuple[str, str]:
    if param.param_type_name == "argument":
        opts = f"`{param.metavar or param.name.upper()}`"
    else:
        opts = " / ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])
    metavar = param.metavar if getattr(param, "metavar", None) else None
    if getattr(param, "is_flag", False):
        metavar = None
    if metavar and param.param_type_name == "option":
        opts += f" `{metavar}`"
    help_text = (getattr(param, "help", None) or "").replace("\n", " ").strip()
    if getattr(param, "multiple", False):
        help_text += " (repeatable)" if "repeatable" not in help_text else ""
    default = getattr(param, "default", None)
    if (
        default not in (None, False, [], ())
        and not getattr(param, "is_flag", False)
        and "default" not in help_text.lower()
    ):
        help_text += f" Default: `{default}`."
    return opts, help_text


def cli_reference_markdown() -> str:
    """One subsection per command: usage, what it does, its arguments and options."""
    root = typer.main.get_command(app)
    ctx = typer.Context(root, info_name="agentos")
    lines: list[str] = [
        "Every command takes `--help`; `agentos --version` prints the version. Listing "
        "commands take `--json` for scripts.",
        "",
    ]
    commands: list[tuple[str, Any, Any]] = []
    for name, command in getattr(root, "commands", {}).items():
        sub = getattr(command, "commands", None)
        if sub:
            group_ctx = typer.Context(command, info_name=name, parent=ctx)
            commands += [(f"{name} {n}", c, group_ctx) for n, c in sub.items()]
        else:
            commands.append((name, command, ctx))
    for name, command, parent in commands:
        sub_ctx = typer.Context(command, info_name=name.split()[-1], parent=parent)
        usage = " ".join(command.collect_usage_pieces(sub_ctx))
        lines.append(f"### `agentos {name}`")
        lines.append("")
        lines.append("```")
        lines.append(f"agentos {name} {usage}".rstrip())
        lines.append("```")
        lines.append("")
        doc = (command.help or "").strip()
        lines.append(" ".join(doc.split()))
        lines.append("")
        rows = [
            _param_row(p)
            for p in command.params
            if p.name != "help" and not getattr(p, "hidden", False)
        ]
        if rows:
            lines.append("| argument / option | meaning |")
            lines.append("| --- | --- |")
            for opts, help_text in rows:
                lines.append(f"| {opts} | {help_text} |")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def sections() -> dict[str, str]:
    return {
        "agents-reference": agents_reference_markdown(),
        "config-reference": config_reference_markdown(),
        "cli-reference": cli_reference_markdown(),
    }


def render_readme(text: str) -> str:
    """The README text with every generated section replaced by its current content."""
    for name, body in sections().items():
        pattern = re.compile(
            rf"(<!-- {re.escape(name)} -->\n)(.*?)(<!-- /{re.escape(name)} -->)", re.DOTALL
        )
        if not pattern.search(text):
            raise ValueError(f"README has no <!-- {name} --> … <!-- /{name} --> markers")
        replacement = body.rstrip()

        def fill(m: re.Match[str], content: str = replacement) -> str:
            return f"{m.group(1)}{content}\n{m.group(3)}"

        text = pattern.sub(fill, text)
    return text


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else Path("README.md")
    old = path.read_text(encoding="utf-8")
    new = render_readme(old)
    if new != old:
        path.write_text(new, encoding="utf-8")
        print(f"updated {path}")
    else:
        print(f"{path} is up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
