"""One run's timeline, as the dashboard shows it: what was asked, what came back, how it
was parsed, what failed, on which engine and how fast.

Built from the run's ``events`` (in ``seq`` order) and its ``llm_calls``: an ``answer``
event names the call that produced it, which adds the batch size and cache hit; failed
calls (retries the agent never saw) have no event and are placed by the time they ended.
Event types this module does not know are shown with their payload, so a newer runtime's
events still appear.

A long run is read a page at a time (:data:`PAGE_EVENTS` events, by ``seq``), so that its
timeline opens at once whatever its length: each page is built from its events, the calls
its answers name and the failed calls that ended among them, and carries a :class:`Fold`
forward to the next. The figures in the head (calls, failed calls, tokens, events) are
counted in SQL over the whole run on every page. A request whose prompt (its whole
message list) equals the previous request's is folded to "same prompt as step N", N
being the step (the event's ``seq``) where that prompt is shown in full, because a
perpetual or high-``length`` agent asks the same long prompt thousands of times.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from agentos.store import queries
from agentos.store.db import Store
from agentos.tui.format import count, duration
from agentos.tui.rows import RunRow, run_row

MESSAGE_CHARS = 4000
"""A prompt message longer than this is cut in the timeline (the store keeps it whole)."""

PAGE_EVENTS = 200
"""How many events one read of a timeline takes (a few screens of entries)."""


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
    step: int | None = None
    """The event's ``seq`` (what "same prompt as step N" points at); None for a failed
    call, which has no event."""


@dataclass(slots=True)
class Fold:
    """What building one page of a timeline leaves for the next: the last request's
    prompt and the step that shows it in full, and how many messages of each attempt's
    conversation have been shown (a re-ask shows only what it adds)."""

    prompt: tuple[str, int] | None = None
    shown_messages: dict[Any, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Timeline:
    """A run and its entries in the order they happened: all of them, or one page.

    A page's successor is read with ``after=`` this page (:func:`read_timeline`)."""

    run: RunRow
    entries: tuple[TimelineEntry, ...]
    calls: int
    failed_calls: int
    tokens: int
    events: int = 0
    """How many events the run has in all (not only this page's)."""
    last_seq: int = 0
    """The ``seq`` of the last event read so far (0: none)."""
    last_time: float | None = None
    """When the last event read so far happened; failed calls up to it are placed."""
    more: bool = False
    """There are more events after :attr:`last_seq` (when this page was read)."""
    fold: Fold = field(default_factory=Fold, compare=False)


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
    run: dict[str, Any],
    events: Iterable[dict[str, Any]],
    calls: Iterable[dict[str, Any]],
    *,
    fold: Fold | None = None,
    totals: tuple[int, int, int, int] | None = None,
    more: bool = False,
    last: tuple[int, float | None] = (0, None),
) -> Timeline:
    """The timeline of ``run`` from its event and model-call rows (pure).

    For a page: ``fold`` from the page before, ``totals`` (calls, failed calls, tokens,
    events) of the whole run, ``more`` if the page was full, and ``last`` (seq, time) of
    the page before, kept when this page has no events. Without them, ``events`` and
    ``calls`` are the whole run."""
    row = run_row(run)
    start = row.started_at
    calls = list(calls)
    fold = fold if fold is not None else Fold()
    by_id = {c["id"]: c for c in calls}
    entries: list[tuple[float, int, TimelineEntry]] = []
    last_seq, last_time = last
    for event in events:
        p = event["payload"] if isinstance(event["payload"], dict) else {}
        at = float(event["time"])
        step = event.get("seq")
        label = _attempt_label(p.get("attempt"), p.get("turn", 0))
        kind = event["type"]
        headline, body = _describe(kind, p, by_id, fold, step)
        entry = TimelineEntry(at - start, label, kind, headline, body, step)
        entries.append((at, len(entries), entry))
        last_seq, last_time = (step if isinstance(step, int) else last_seq), at
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
    if totals is None:
        totals = (
            len(calls),
            sum(c.get("status") != "ok" for c in calls),
            sum((c.get("prompt_tokens") or 0) + (c.get("completion_tokens") or 0) for c in calls),
            len(entries) - sum(c.get("status") != "ok" for c in calls),
        )
    return Timeline(
        run=row,
        entries=tuple(e for _, _, e in entries),
        calls=totals[0],
        failed_calls=totals[1],
        tokens=totals[2],
        events=totals[3],
        last_seq=last_seq,
        last_time=last_time,
        more=more,
        fold=fold,
    )


def _describe(
    kind: str,
    p: dict[str, Any],
    calls: dict[str, dict[str, Any]],
    fold: Fold,
    step: Any = None,
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
        already = fold.shown_messages.get(p.get("attempt"), 0)
        fold.shown_messages[p.get("attempt")] = len(messages)
        turn = p.get("turn") or 0
        headline = f"re-ask {turn}" if turn else "request"
        prompt = _json(messages)
        if fold.prompt is not None and fold.prompt[0] == prompt:
            return headline, f"same prompt as step {fold.prompt[1]}"
        fold.prompt = (prompt, step if isinstance(step, int) else 0)
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


def read_timeline(
    store: Store, run_id: str, *, after: Timeline | None = None, limit: int | None = PAGE_EVENTS
) -> Timeline | None:
    """The timeline of the run ``run_id`` (or an unambiguous prefix); None if unknown.

    One page: at most ``limit`` events (None: all of them; 0: none, only the run and its
    figures, to refresh a head), those after the page ``after``. Reads only that page's
    events and the model calls it needs, so a page costs the same in a run of any length.
    Raises StoreError when the prefix matches several runs.
    """
    run = queries.get_run(store, run_id)
    if run is None:
        return None
    run_id = run["id"]
    seq, since = (after.last_seq, after.last_time) if after is not None else (0, None)
    if limit == 0:
        events: list[dict[str, Any]] = []
        more = after.more if after is not None else True
    else:
        # one more than a page, to know whether another follows without reading it
        events = queries.run_events(store, run_id, after=seq, limit=limit and limit + 1)
        more = limit is not None and len(events) > limit
        events = events[:limit]
    # failed calls have no event: place those that ended since the last page, up to this
    # page's last event (or all of them, once the run's events are all read and it ended)
    until = events[-1]["time"] if events else since
    if not more and limit != 0 and run["status"] != "running":
        until = None
    call_ids = [str(e["payload"].get("call_id")) for e in events if _names_call(e)]
    failed = limit != 0 and (bool(events) or until is None)
    calls = _page_calls(store, run_id, call_ids, since, until, failed)
    return build_timeline(
        run,
        events,
        calls,
        fold=after.fold if after is not None else Fold(),
        totals=_totals(store, run_id),
        more=more,
        last=(seq, since),
    )


def _names_call(event: dict[str, Any]) -> bool:
    payload = event["payload"]
    return isinstance(payload, dict) and payload.get("call_id") is not None


_CALL_COLUMNS = (
    "id, job_id, engine, status, error, error_class, http_status, latency_ms, batch_size, "
    "cache_hit, started_at, finished_at"
)


def _page_calls(
    store: Store,
    run_id: str,
    call_ids: list[str],
    since: float | None,
    until: float | None,
    failed: bool,
) -> list[dict[str, Any]]:
    """The calls a page's answers name, and (with ``failed``) the failed calls that ended
    after ``since`` and by ``until`` (None: no bound); never the request or response."""
    calls: list[dict[str, Any]] = []
    if call_ids:
        marks = ",".join("?" * len(call_ids))
        calls += store.db.query(
            f"SELECT {_CALL_COLUMNS} FROM llm_calls WHERE id IN ({marks})", call_ids
        )
    if failed:
        sql = f"SELECT {_CALL_COLUMNS} FROM llm_calls WHERE run_id = ? AND status != 'ok'"
        ended = "COALESCE(finished_at, started_at)"
        params: list[Any] = [run_id]
        if since is not None:
            sql += f" AND {ended} > ?"
            params.append(since)
        if until is not None:
            sql += f" AND {ended} <= ?"
            params.append(until)
        calls += store.db.query(sql + " ORDER BY started_at, id", params)
    return calls


def _totals(store: Store, run_id: str) -> tuple[int, int, int, int]:
    """Calls, failed calls, tokens and events of the whole run."""
    calls, failed, tokens = next(
        store.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(status != 'ok'), 0), "
            "COALESCE(SUM(COALESCE(prompt_tokens, 0) + COALESCE(completion_tokens, 0)), 0) "
            "FROM llm_calls WHERE run_id = ?",
            [run_id],
        )
    )
    (events,) = next(store.db.execute("SELECT COUNT(*) FROM events WHERE run_id = ?", [run_id]))
    return int(calls), int(failed), int(tokens), int(events)
