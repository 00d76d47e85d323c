"""``agentos dataset export``: fine-tuning data from the answers agents accepted.

Every prompt-agent attempt is recorded as events (see :mod:`agentos.agents.prompt`):
``request`` (the messages sent, per ``attempt`` and ``turn``), ``answer`` (the text),
then ``parsed`` (the validated value) or ``parse_error`` (the answer was rejected, and the
attempt re-asks with the error as feedback). From them this module writes chat-format
JSON Lines, the shape OpenAI fine-tuning takes:

- **chat** (default), one line per accepted answer::

      {"messages": [{"role": "system", ...}, {"role": "user", ...},
                    {"role": "assistant", "content": ACCEPTED}]}

  The messages are those the model was sent (the system prompt, the rendered prompt with
  its answer-format instructions, and any tool calls and their results on the way), with
  re-ask detours left out: a rejected answer and the feedback after it are not part of
  the path that succeeded. ``ACCEPTED`` is the validated value: the JSON of the parsed
  data for an agent with a ``response_format`` (so an answer that parsed only after local
  repair teaches the repaired form), the text for a plain-text agent.
- **pairs** (``pairs=True``), one line per rejected answer, DPO-style (OpenAI's
  preference format)::

      {"input": {"messages": [...]},
       "preferred_output": [{"role": "assistant", "content": ACCEPTED}],
       "non_preferred_output": [{"role": "assistant", "content": REJECTED}]}

  A rejected answer is paired with an answer accepted for the same conversation in the
  same run (its own attempt's re-ask, or another attempt with the same prompt); a
  rejected answer with no such partner is left out.

Filters (:func:`agentos.store.export._select`, shared with ``agentos export``): the
runs' agents, run ids, ``since`` (the run's start), and ``first_try`` (only answers
accepted in an attempt that had no answer rejected).

Streaming: events come from one cursor in ``(run_id, seq)`` order, a chunk at a time, and
one run's events are held at a time, so memory does not grow with the database; one read
transaction makes the export one snapshot even while ``agentos run`` writes.
De-duplication: a line identical to one already written (the same conversation and answer,
from a re-run, a replay or a cache hit) is written once; what is remembered is a 16-byte
digest per distinct line.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentos.store.db import Store
from agentos.store.export import CHUNK_ROWS, TextSink, _opened, _select

Message = dict[str, Any]

_EVENT_TYPES = ("run_started", "request", "answer", "parse_error", "parsed")


@dataclass
class DatasetReport:
    """What an export wrote."""

    examples: int = 0
    """Lines written."""
    duplicates: int = 0
    """Lines left out because an identical one was written before."""
    runs: int = 0
    """Runs that gave at least one line."""
    rejected: int = 0
    """Rejected answers seen (pairs: those with a partner are the lines)."""

    def to_json(self) -> dict[str, int]:
        return {
            "examples": self.examples,
            "duplicates": self.duplicates,
            "runs": self.runs,
            "rejected": self.rejected,
        }


@dataclass
class _Attempt:
    requests: dict[int, list[Message]] = field(default_factory=dict)
    answers: dict[int, str] = field(default_factory=dict)
    rejected: set[int] = field(default_factory=set)
    parsed: tuple[int, Any] | None = None


@dataclass
class _Run:
    run_id: str
    text_answers: bool = False
    """The run's agent has no response format: its accepted value is the text."""
    attempts: dict[int, _Attempt] = field(default_factory=dict)


def export_dataset(
    store_or_path: Store | str | Path,
    *,
    out: TextSink,
    agents: Sequence[str] | None = None,
    run_ids: Sequence[str] | None = None,
    since: float | None = None,
    first_try: bool = False,
    pairs: bool = False,
) -> DatasetReport:
    """Write the accepted answers of the selected runs to ``out`` as JSON Lines (chat
    examples, or preference pairs with ``pairs``); see the module docstring."""
    report = DatasetReport()
    seen: set[bytes] = set()
    with _opened(store_or_path) as store:
        conn: sqlite3.Connection = store.db.conn
        marks = ", ".join("?" for _ in _EVENT_TYPES)
        sql, params = _select(
            "events",
            ["run_id", "seq", "type", "payload"],
            agent=list(agents) if agents else None,
            since=since,
            run_ids=list(run_ids) if run_ids is not None else None,
            conditions=[(f"t.type IN ({marks})", _EVENT_TYPES)],
        )
        cursor = conn.execute(sql, params)
        try:
            for run in _runs(cursor):
                lines = _pair_lines(run, first_try) if pairs else _chat_lines(run, first_try)
                report.rejected += sum(len(a.rejected) for a in run.attempts.values())
                wrote = False
                for line in lines:
                    text = json.dumps(line, ensure_ascii=False)
                    digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
                    if digest in seen:
                        report.duplicates += 1
                        continue
                    seen.add(digest)
                    out.write(text + "\n")
                    report.examples += 1
                    wrote = True
                report.runs += wrote
        finally:
            cursor.close()
    return report


def _runs(cursor: sqlite3.Cursor) -> Iterator[_Run]:
    """The cursor's events gathered into one :class:`_Run` at a time."""
    run: _Run | None = None
    while rows := cursor.fetchmany(CHUNK_ROWS):
        for run_id, _seq, type_, payload in rows:
            if run is None or run.run_id != run_id:
                if run is not None:
                    yield run
                run = _Run(run_id)
            try:
                data = json.loads(payload) if payload else {}
            except ValueError:
                continue
            if isinstance(data, dict):
                _add(run, type_, data)
    if run is not None:
        yield run


def _add(run: _Run, type_: str, data: dict[str, Any]) -> None:
    if type_ == "run_started":
        run.text_answers = "json_schema" in data and data["json_schema"] is None
        return
    attempt, turn = data.get("attempt"), data.get("turn")
    if not isinstance(attempt, int) or not isinstance(turn, int):
        return  # an event of another run kind (a team's turn, a planner's plan)
    trace = run.attempts.setdefault(attempt, _Attempt())
    if type_ == "request" and isinstance(data.get("messages"), list):
        trace.requests[turn] = data["messages"]
    elif type_ == "answer" and isinstance(data.get("text"), str):
        trace.answers[turn] = data["text"]
    elif type_ == "parse_error":
        trace.rejected.add(turn)
    elif type_ == "parsed" and "data" in data:
        trace.parsed = (turn, data["data"])


def _inputs(trace: _Attempt) -> dict[int, list[Message]]:
    """Per turn, the conversation that led to it without re-ask detours: a turn after a
    rejected answer has the same input as the rejected one; a turn after tool calls adds
    them; a conversation that was rewritten (a fallback to command-mode tool calling) is
    taken as sent."""
    inputs: dict[int, list[Message]] = {}
    previous: list[Message] | None = None
    for turn in sorted(trace.requests):
        sent = trace.requests[turn]
        if previous is None or turn - 1 not in inputs or sent[: len(previous)] != previous:
            inputs[turn] = list(sent)
        elif turn - 1 in trace.rejected:
            inputs[turn] = inputs[turn - 1]
        else:
            inputs[turn] = inputs[turn - 1] + sent[len(previous) :]
        previous = sent
    return inputs


def _accepted(run: _Run, data: Any) -> str:
    if run.text_answers and isinstance(data, str):
        return data
    return json.dumps(data, ensure_ascii=False)


def _successes(run: _Run, first_try: bool) -> Iterator[tuple[list[Message], str]]:
    """(input, accepted answer) per accepted attempt of the run, in attempt order."""
    for number in sorted(run.attempts):
        trace = run.attempts[number]
        if trace.parsed is None or (first_try and trace.rejected):
            continue
        turn, data = trace.parsed
        conversation = _inputs(trace).get(turn)
        if conversation is not None:
            yield conversation, _accepted(run, data)


def _chat_lines(run: _Run, first_try: bool) -> Iterator[dict[str, Any]]:
    for conversation, answer in _successes(run, first_try):
        yield {"messages": [*conversation, {"role": "assistant", "content": answer}]}


def _pair_lines(run: _Run, first_try: bool) -> Iterator[dict[str, Any]]:
    preferred: dict[str, list[str]] = {}
    for conversation, answer in _successes(run, first_try):
        preferred.setdefault(_key(conversation), []).append(answer)
    used: dict[str, int] = {}
    for number in sorted(run.attempts):
        trace = run.attempts[number]
        inputs = _inputs(trace)
        for turn in sorted(trace.rejected):
            asked = inputs.get(turn)
            text = trace.answers.get(turn)
            if asked is None or text is None:
                continue
            key = _key(asked)
            partners = preferred.get(key)
            if not partners:
                continue
            index = used.get(key, 0)
            used[key] = index + 1
            yield {
                "input": {"messages": asked},
                "preferred_output": [
                    {"role": "assistant", "content": partners[index % len(partners)]}
                ],
                "non_preferred_output": [{"role": "assistant", "content": text}],
            }


def _key(conversation: list[Message]) -> str:
    return json.dumps(conversation, sort_keys=True, ensure_ascii=False)
