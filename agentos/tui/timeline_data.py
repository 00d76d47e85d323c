"""One run's timeline, as the dashboard shows it: what was asked, what came back, how it
was parsed, what failed, on which engine and how fast.

Built from the run's ``events`` (in ``seq`` order) and its ``llm_calls``: an ``answer``
event names the call that produced it, which adds the batch size and cache hit; failed
calls (retries the agent never saw) have no event and are placed by the time they ended.
Event types this module does not know are shown with their payload, so a newer runtime's
events still appear.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from agentos.store import queries
from agentos.store.db import Store
from agentos.tui.format import count, duration
from agentos.tui.rows import RunRow, run_row

MESSAGE_CHARS = 4000
"""A prompt message longer than this is cut in the timeline (the store keeps it whole)."""


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One line of the timeline, with an optional body below it."""

    offset_s: float
    """Seconds since the run started."""
    attempt: str
    """``#2`` for attempt 2, ``#2.1`` for its first re-ask; empty for the run itself."""
    kind: str
    """The event type (``request``, ``answer``, ``parsed`` …) or ``call_failed``."""
    headline: str
    body: str = ""


@dataclass(frozen=True, slots=True)
class Timeline:
    """A run and its entries in the order they happened."""

    run: RunRow
    entries: tuple[TimelineEntry, ...]
    calls: int
    failed_calls: int
    tokens: int


def _attempt_label(attempt: Any, turn: Any = 0) -> str:
    if not isinstance(attempt, int):
        return ""
    return f"#{attempt}.{turn}" if isinstance(turn, int) and turn else f"#{attempt}"


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _message_text(message: Any) -> str:
    if not isinstance(message, dict):
        return _json(message)
    content = message.get("content")
    text = content if isinstance(content, str) else _json(content)
    if len(text) > MESSAGE_CHARS:
        text = text[:MESSAGE_CHARS] + f" … ({len(text) - MESSAGE_CHARS} more characters)"
    return f"{message.get('role', '?')}: {text}"


def _call_attempt(call: dict[str, Any]) -> str:
    """``#2.1`` from a job id ``<run>:<attempt>:<turn>``."""
    parts = str(call.get("job_id") or "").rsplit(":", 2)
    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
        return _attempt_label(int(parts[1]), int(parts[2]))
    return ""


def build_timeline(
    run: dict[str, Any], events: Iterable[dict[str, Any]], calls: Iterable[dict[str, Any]]
) -> Timeline:
    """The timeline of ``run`` from its event and model-call rows (pure)."""
    row = run_row(run)
    start = row.started_at
    calls = list(calls)
    by_id = {c["id"]: c for c in calls}
    entries: list[tuple[float, int, TimelineEntry]] = []
    shown_messages: dict[Any, int] = {}
    for event in events:
        p = event["payload"] if isinstance(event["payload"], dict) else {}
        at = float(event["time"])
        label = _attempt_label(p.get("attempt"), p.get("turn", 0))
        kind = event["type"]
        headline, body = _describe(kind, p, by_id, shown_messages)
        entries.append((at, len(entries), TimelineEntry(at - start, label, kind, headline, body)))
    for call in calls:
        if call.get("status") == "ok":
            continue
        at = float(call.get("finished_at") or call.get("started_at") or start)
        status = f" (HTTP {call['http_status']})" if call.get("http_status") else ""
        headline = (
            f"request to {call.get('engine')} failed after "
            f"{duration((call.get('latency_ms') or 0) / 1000)}: "
            f"{call.get('error_class') or call.get('status')}{status}"
        )
        entry = TimelineEntry(
            at - start, _call_attempt(call), "call_failed", headline, call.get("error") or ""
        )
        entries.append((at, len(entries), entry))
    entries.sort(key=lambda e: (e[0], e[1]))
    return Timeline(
        run=row,
        entries=tuple(e for _, _, e in entries),
        calls=len(calls),
        failed_calls=sum(c.get("status") != "ok" for c in calls),
        tokens=sum(
            (c.get("prompt_tokens") or 0) + (c.get("completion_tokens") or 0) for c in calls
        ),
    )


def _describe(
    kind: str,
    p: dict[str, Any],
    calls: dict[str, dict[str, Any]],
    shown_messages: dict[Any, int],
) -> tuple[str, str]:
    if kind == "run_started":
        headline = "run started"
        if p.get("wanted") is not None:
            headline += f" · wants {p['wanted']} good results"
        if p.get("attempt_cap") is not None:
            headline += f" · at most {p['attempt_cap']} attempts"
        variables = p.get("variables")
        return headline, f"variables: {_json(variables)}" if variables else ""
    if kind == "request":
        raw = p.get("messages")
        messages: list[Any] = raw if isinstance(raw, list) else []
        already = shown_messages.get(p.get("attempt"), 0)
        shown_messages[p.get("attempt")] = len(messages)
        turn = p.get("turn") or 0
        headline = f"re-ask {turn}" if turn else "request"
        return headline, "\n".join(_message_text(m) for m in messages[already:])
    if kind == "answer":
        headline = f"answer from {p.get('engine')}"
        if p.get("model"):
            headline += f" ({p['model']})"
        if p.get("latency_ms") is not None:
            headline += f" in {duration(float(p['latency_ms']) / 1000)}"
        if p.get("tokens") is not None:
            headline += f" · {count(p['tokens'])} tokens"
        call = calls.get(str(p.get("call_id")))
        if call is not None:
            if (call.get("batch_size") or 1) > 1:
                headline += f" · batch of {call['batch_size']}"
            if call.get("cache_hit"):
                headline += " · cache hit"
        return headline, str(p.get("text") or "")
    if kind == "parsed":
        repairs = p.get("repairs") or []
        headline = "parsed" + (
            f" after repairing: {', '.join(map(str, repairs))}" if repairs else ""
        )
        return headline, _json(p.get("data"))
    if kind == "parse_error":
        return "parse error", str(p.get("error") or "")
    if kind == "error":
        return f"attempt failed: {p.get('error_class') or 'error'}", str(p.get("error") or "")
    if kind == "run_finished":
        headline = f"run {p.get('status')}"
        if p.get("successes") is not None:
            headline += f" · {p['successes']} good results"
        return headline, str(p.get("error") or "")
    return kind.replace("_", " "), _json(p) if p else ""


def read_timeline(store: Store, run_id: str) -> Timeline | None:
    """The timeline of the run ``run_id`` (or an unambiguous prefix); None if unknown.

    Raises StoreError when the prefix matches several runs.
    """
    run = queries.get_run(store, run_id)
    if run is None:
        return None
    return build_timeline(
        run, queries.run_events(store, run["id"]), queries.run_llm_calls(store, run["id"])
    )
