"""A timeline on a terminal (rich): one block per step, readable top to bottom."""

from __future__ import annotations

import json
import time
from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.text import Text

from agentos.replay.reexec import ReplayReport
from agentos.replay.timeline import Step, Timeline

OUTCOME_STYLE = {"ok": "green", "parse error": "yellow", "error": "red", "no answer": "red"}


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def header(timeline: Timeline) -> Panel:
    run = timeline.run
    took = (
        f"{run['finished_at'] - run['started_at']:.1f}s"
        if run.get("finished_at") and run.get("started_at")
        else "-"
    )
    colour = {"succeeded": "green", "failed": "red", "running": "yellow"}.get(run["status"], "")
    lines = [
        Text.assemble(("run ", "dim"), (run["id"], "bold"), ("  agent ", "dim"), run["agent"]),
        Text.assemble(
            ("status ", "dim"),
            (run["status"], colour),
            ("  good ", "dim"),
            f"{run.get('successes') or 0}/{run.get('wanted') or 0}",
            ("  attempts ", "dim"),
            str(run.get("attempts") or 0),
            ("  steps ", "dim"),
            str(len(timeline.steps)),
        ),
        Text.assemble(("started ", "dim"), _when(run.get("started_at")), ("  took ", "dim"), took),
    ]
    if run.get("forked_from"):
        lines.append(Text.assemble(("replay of ", "dim"), run["forked_from"]))
    if run.get("error"):
        lines.append(Text(run["error"], style="red"))
    return Panel(Group(*lines), title="run", title_align="left", expand=False)


def step_block(step: Step, *, show_prompt: bool, width: int = 400) -> Panel:
    parts: list[Any] = []
    if show_prompt:
        for message in step.messages:
            parts.append(
                Text.assemble(
                    (f"{message.get('role', '?')}: ", "bold cyan"),
                    _clip(str(message.get("content", "")), width * 3),
                )
            )
    elif step.messages:
        last = step.messages[-1]
        parts.append(
            Text.assemble(
                (f"{last.get('role', '?')}: ", "bold cyan"),
                _clip(str(last.get("content", "")), width),
            )
        )
    for call in step.calls:
        if call.status != "ok":
            parts.append(
                Text(
                    f"retry: request {call.attempt} to {call.engine} failed after "
                    f"{call.latency_ms:.0f} ms — {call.error_class}: "
                    f"{_clip(call.error or '', 160)}",
                    style="yellow",
                )
            )
    if step.answer is not None:
        parts.append(Text.assemble(("answer: ", "bold magenta"), _clip(step.answer, width * 2)))
    if step.parsed is not None:
        parsed = json.dumps(step.parsed, ensure_ascii=False)
        parts.append(Text.assemble(("parsed: ", "bold green"), _clip(parsed, width)))
        if step.repairs:
            parts.append(Text(f"repairs: {'; '.join(step.repairs)}", style="dim"))
    if step.parse_error:
        parts.append(Text.assemble(("parse error: ", "bold yellow"), step.parse_error))
    if step.error:
        parts.append(Text.assemble(("error: ", "bold red"), step.error))
    ok_calls = [c for c in step.calls if c.status == "ok"]
    facts = []
    if ok_calls:
        call = ok_calls[-1]
        facts.append("cache hit" if call.cache_hit else f"{call.engine} {call.latency_ms:.0f} ms")
        if call.batch_size > 1:
            facts.append(f"batch of {call.batch_size}")
        if call.prompt_tokens or call.completion_tokens:
            facts.append(f"{call.prompt_tokens}+{call.completion_tokens} tokens")
    title = Text.assemble(
        (f"step {step.number}", "bold"),
        f" · attempt {step.attempt}" + (f" turn {step.turn}" if step.turn else ""),
        (f" · {step.outcome}", OUTCOME_STYLE.get(step.outcome, "")),
        (f" · {' · '.join(facts)}" if facts else "", "dim"),
        (f" · {_when(step.time)}", "dim"),
    )
    return Panel(Group(*parts), title=title, title_align="left", expand=True)


def print_timeline(timeline: Timeline, console: Console) -> None:
    console.print(header(timeline))
    previous: list[dict[str, Any]] | None = None
    for step in timeline.steps:
        # The full conversation once; after that only what is new, unless it changed.
        show_prompt = previous is None or step.messages[: len(previous)] != previous
        if step.turn:
            show_prompt = False
        console.print(step_block(step, show_prompt=show_prompt))
        if step.turn == 0:
            previous = step.messages
    if timeline.finished:
        console.print(
            Text(
                f"finished: {timeline.finished.get('status')}"
                + (f" — {timeline.finished['error']}" if timeline.finished.get("error") else ""),
                style="bold",
            )
        )


def print_report(report: ReplayReport, console: Console) -> None:
    """What an exact or live replay found."""
    original = report.original
    if report.divergence is not None:
        d = report.divergence
        console.print(Text(f"diverged: {d.message}", style="bold red"))
        for line in d.difference:
            console.print(Text(f"  {line}", style="yellow"))
        return
    outcome = report.outcome
    assert outcome is not None
    line = (
        f"{report.mode} replay of {original['id']}: {outcome.status} "
        f"{outcome.successes}/{outcome.wanted} in {outcome.attempts} attempts "
        f"(original: {original['status']} {original.get('successes') or 0}/"
        f"{original.get('wanted') or 0} in {original.get('attempts') or 0})"
    )
    if report.new_run_id:
        line += f"; recorded as run {report.new_run_id}"
    console.print(Text(line, style="bold"))
    for step in report.steps:
        same = step.same_answer and step.same_result
        mark = "same" if same else ("same result" if step.same_result else "different")
        style = "green" if same else ("yellow" if step.same_result else "red")
        text = Text.assemble(
            (f"step {step.number}", "bold"),
            f" · attempt {step.attempt}" + (f" turn {step.turn}" if step.turn else ""),
            (f" · {step.source}", "dim"),
            (f" · {mark}", style),
        )
        console.print(text)
        if not same:
            console.print(
                Text(f"    before: {_clip(json.dumps(step.old_result), 200)}", style="dim")
            )
            console.print(Text(f"    now:    {_clip(json.dumps(step.new_result), 200)}"))
    verdict = "reproduced" if report.reproduced else "differs from the original"
    console.print(Text(verdict, style="green" if report.reproduced else "yellow"))
