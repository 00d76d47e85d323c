"""Teams: members take turns on one task until a termination condition holds.

A team agent (``kind: team``) has a ``prompt`` (the task, a template like any prompt),
``members`` (names of prompt agents of the same file, whose ``system`` and ``prompt``
describe their role) and ``termination``. Members speak round-robin in the order listed,
one message per turn. Each turn is one chat request through the router, built from the
speaker's point of view:

- ``system``: the member's system prompt, and one line saying who it is in the team;
- ``user``: the task;
- the conversation so far: the member's own earlier answers as ``assistant`` messages,
  everyone else's as ``user`` messages prefixed with the speaker's name;
- a last ``user`` message: the team memory (below), then the member's own ``prompt``
  (its instruction for the turn), then the answer-format instructions of its
  ``response_format``, if it has one.

Besides its own ``vars`` and the team's variables, a member's templates may read ``task``,
``team`` and ``memory`` (give them a default under the member's ``vars``, so that the file
validates). Consecutive ``user`` messages are merged into one, because several chat
templates refuse two in a row. A member with a ``response_format`` has its answer parsed
and validated (one re-ask on a miss, as prompt agents do); a miss after that still becomes
its message, as the text it wrote, and counts as a failed attempt of the run.

**What a member says.** A member's message is its answer as text; for a parsed answer
that is an object, the object less its ``memory`` field, and the value alone when one
string field remains (``{"reply": "Looks good"}`` says ``Looks good``).

**Shared memory.** A key/value memory of the team, kept as the team's agent state
(:class:`~agentos.agents.state.AgentState`: ``agent_state`` under the team's name), so it
outlives the run: the next run of the team starts from it. Every member reads it (it is
rendered into the last message of each request as ``- key: value`` lines). A member
writes it by having a ``memory`` object in its ``response_format`` (``memory: {plan: the
plan so far}``): each key of that object in its parsed answer is set, a ``null`` value
removes the key. Each write is a ``memory`` event of the run and is persisted at once.

**Termination**, checked after every message, first that holds wins:

- ``mention``: the message is from one of ``mention.sources`` (empty: any member) and
  contains ``mention.text`` (case-sensitive). The task is not a message, so it never
  ends the conversation; nor does a member quoting the task: an occurrence whose
  neighbouring word before or after it makes a phrase of the task (compared case- and
  punctuation-insensitively) is read as a quote;
- ``token_budget``: prompt and completion tokens of every call of the run (re-asks and
  cache hits included) reach the budget;
- ``max_turns``: that many messages have been said;
- ``timeout``: the conversation's wall time (pauses included) runs out; a call in flight
  is abandoned.

The run succeeds when it ends by one of these with at least one message, except that a
team with a ``mention`` has reached its goal only when the mention ended it: ended by a
limit instead (``max_turns``, ``token_budget``, ``timeout``), the run fails, and its error
says how it ended and that the text was not said. The one result of a run that succeeds
is the final message (text, member, turn, parsed data, the reason, the memory), passed to
``context.result`` like every recorded result; the display is told how it ended. A
timeout before any message, an engine that fails after the router's retries, or a member
prompt that does not render fail it too.

**Record.** Besides ``run_started`` (task, members with their specs, termination, starting
memory) and ``run_finished``: per model call ``request``/``answer``/``parsed``/
``parse_error`` events numbered like a prompt agent's (``attempt`` is the team's turn,
``turn`` the re-ask), so replay's timeline shows them; per turn a ``message`` event
(``member``, ``turn``, ``text``, ``tokens``, ``data``); a ``memory`` event per write; and
one ``terminated`` event with the reason. The reason is also :attr:`TeamOutcome.terminated`.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from typing import Any, Literal

from agentos.agents.base import RecordedRun, RunContext, retry_policy
from agentos.agents.instructions import format_instructions, reask_message
from agentos.agents.parsing import parse_answer
from agentos.agents.state import AgentState
from agentos.errors import AgentosError, ParseError, SpecError
from agentos.router.cache import parse_duration
from agentos.router.jobs import InferenceRequest
from agentos.scheduler.display import RunOutcome
from agentos.spec.agents import AgentsFile, AgentSpec
from agentos.spec.templates import render
from agentos.store import queries
from agentos.store.writer import Update

__all__ = [
    "TeamMessage",
    "TeamOutcome",
    "TeamRun",
    "check_team_members",
    "mentions",
    "team_members",
]

REASKS = 1
"""Follow-up questions within one turn after an answer that does not parse."""

TerminationReason = Literal["mention", "token_budget", "max_turns", "timeout"]

MEMORY_KEY = "memory"
"""The field of a member's parsed answer whose keys are written to the team memory."""


@dataclass(frozen=True)
class TeamMessage:
    """One member's turn, as the conversation and the record keep it."""

    turn: int
    """1 for the first message."""
    member: str
    text: str
    """What the member said (see the module docstring); mentions are looked for here."""
    raw: str
    """The member's last answer as the model wrote it; its own view of what it said."""
    tokens: int
    """Prompt and completion tokens of every call of this turn."""
    data: Any = None
    """The parsed answer, for a member with a response format whose answer parsed."""


@dataclass
class TeamOutcome(RunOutcome):
    """How a team run ended, with why the conversation stopped."""

    terminated: TerminationReason | None = None
    """The termination condition that ended the conversation; None when it did not end
    by one (an engine failure, a cancel)."""


def team_members(team: AgentSpec, agents: AgentsFile | None) -> list[AgentSpec]:
    """The specs of ``team``'s members, in turn order, after checking the team's settings.

    Raises :class:`SpecError`, naming the team and the offending member, for a member that
    is not an agent of the file, is not a prompt agent or is the team itself; for a
    mention source that is not a member; and for a timeout that is not a duration.
    """
    if agents is None:
        raise SpecError(f"team '{team.name}' needs the agents file its members are described in")
    members: list[AgentSpec] = []
    for index, name in enumerate(team.members):
        member = agents.get(name)
        if member is None:
            known = ", ".join(a.name for a in agents if a.name != team.name) or "none"
            raise agents.error(
                team.name,
                ("members", index),
                f"team '{team.name}': member '{name}' is not an agent of this file "
                f"(agents: {known})",
            )
        if member.name == team.name:
            raise agents.error(
                team.name,
                ("members", index),
                f"team '{team.name}' cannot be a member of itself",
            )
        if member.kind != "prompt":
            raise agents.error(
                team.name,
                ("members", index),
                f"team '{team.name}': member '{name}' is a {member.kind} agent; team "
                "members are prompt agents",
            )
        members.append(member)
    termination = team.termination
    if termination.mention is not None:
        for index, source in enumerate(termination.mention.sources):
            if source not in team.members:
                raise agents.error(
                    team.name,
                    ("termination", "mention", "sources", index),
                    f"team '{team.name}': mention source '{source}' is not a member "
                    f"(members: {', '.join(team.members)})",
                )
    if termination.timeout is not None:
        try:
            parse_duration(termination.timeout)
        except SpecError as exc:
            raise agents.error(
                team.name, ("termination", "timeout"), f"team '{team.name}': {exc.reason}"
            ) from None
    return members


def check_team_members(agents: AgentsFile) -> None:
    """Check every team of the file (see :func:`team_members`); for ``agentos validate``."""
    for spec in agents:
        if spec.kind == "team":
            team_members(spec, agents)


def _words(text: str) -> list[str]:
    return re.findall(r"[^\W_]+", text.casefold())


def mentions(message: str, text: str, task: str) -> bool:
    """Whether ``message`` says ``text`` other than by quoting ``task``.

    ``text`` is looked for case-sensitively. An occurrence is a quote of the task when
    the word right before it, or right after it, together with it forms a phrase that
    the task contains (words compared case-insensitively, punctuation ignored).
    """
    text_words = _words(text)
    task_phrase = f" {' '.join(_words(task))} "
    start = 0
    while (index := message.find(text, start)) >= 0:
        start = index + len(text)
        if not text_words:
            return True
        before = _words(message[:index])[-1:]
        after = _words(message[index + len(text) :])[:1]
        phrases = [before + text_words] if before else []
        phrases += [text_words + after] if after else []
        if not any(f" {' '.join(phrase)} " in task_phrase for phrase in phrases):
            return True
    return False


def _said(data: Any, raw: str) -> str:
    """What a member said, from its parsed answer (see the module docstring)."""
    if isinstance(data, dict):
        rest = {k: v for k, v in data.items() if k != MEMORY_KEY}
        if not rest:
            return raw.strip()
        if len(rest) == 1:
            (value,) = rest.values()
            if isinstance(value, str):
                return value
        return json.dumps(rest, ensure_ascii=False)
    if data is None:
        return raw.strip()
    return data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


class TeamRun(RecordedRun[TeamOutcome]):
    """One run of one team: a recorded conversation of its members, to its end."""

    def __init__(
        self,
        spec: AgentSpec,
        context: RunContext,
        *,
        variables: dict[str, Any] | None = None,
    ) -> None:
        self.spec = spec
        self.context = context
        self.router = context.router
        self.store = context.store
        self.display = context.display
        self.agents_file = context.agents_file
        self.members = team_members(spec, context.agents)
        self.variables = {**spec.vars, **(variables or {})}
        self.timeout_s = (
            parse_duration(spec.termination.timeout) if spec.termination.timeout else None
        )
        self.cap = spec.termination.max_turns
        self.transcript: list[TeamMessage] = []
        self.memory_state = AgentState(context.store, spec.name)
        """The team memory as stored: ``agent_state`` under the team's name."""
        self.memory: dict[str, Any] = {}
        """The team memory during the run: what ``memory_state`` holds, kept here in turn order."""
        self.tokens = 0
        self.task = ""
        self.successes = 0
        self.attempts = 0
        self.failed_attempts = 0
        self.status = "starting"
        self.paused = False
        self.cancel_reason: str | None = None
        self.run_id = ""
        self._task: asyncio.Task[RunOutcome] | None = None
        self._events: queries.RunEvents | None = None
        self._changed = asyncio.Event()
        self._deadline: float | None = None
        self._speaking: tuple[int, str] | None = None
        """The turn in progress and its member, for error messages."""
        self._ended = False
        """Whether the conversation ended by a termination condition (recorded)."""
        self.terminated: TerminationReason | None = None
        """The condition that ended the conversation, once one did."""

    # -- the run -------------------------------------------------------------------------

    def _prepare(self) -> None:
        self.task = render(self.spec.prompt or "", self.variables)
        self.memory = self.memory_state.items()

    def _started(self) -> dict[str, Any]:
        return {
            "wanted": 1,
            "task": self.task,
            "variables": self.variables,
            "members": [m.name for m in self.members],
            "member_specs": {m.name: m.model_dump(mode="json") for m in self.members},
            "termination": self.spec.termination.model_dump(mode="json"),
            "memory": self.memory,
        }

    async def _body(self) -> str | None:
        try:
            async with asyncio.timeout(self.timeout_s):
                if self.timeout_s is not None:
                    self._deadline = time.monotonic() + self.timeout_s
                self.terminated = await self._converse()
        except TimeoutError:
            self.terminated = "timeout"
        if self.terminated == "timeout" and not self.transcript:
            return f"timed out after {self.spec.termination.timeout} before any member spoke"
        return self._terminated(self.terminated)

    def _run_error(self, exc: AgentosError) -> str:
        where = ""
        if self._speaking is not None:
            where = f"turn {self._speaking[0]} ({self._speaking[1]}): "
        error = where + exc.message
        self.event("error", error=error, error_class=type(exc).__name__)
        return error

    def _ended_by(self, status: str) -> TerminationReason | None:
        """The termination condition the run ended by: none for a cancelled run or one
        that failed before a condition held (a timeout is one)."""
        if status == "cancelled" or (status == "failed" and not self._ended):
            return self.terminated if self.terminated == "timeout" else None
        return self.terminated

    def _finished(self, status: str) -> dict[str, Any]:
        return {"terminated": self._ended_by(status)}

    def _outcome(self, status: str, error: str | None) -> TeamOutcome:
        return TeamOutcome(
            run_id=self.run_id,
            agent=self.spec.name,
            status=status,
            wanted=1,
            successes=self.successes,
            attempts=self.attempts,
            error=error,
            terminated=self._ended_by(status),
        )

    async def _converse(self) -> TerminationReason:
        """Turns until a condition other than the timeout holds; the reason."""
        while True:
            while self.paused:
                self._changed.clear()
                await self._changed.wait()
            turn = len(self.transcript) + 1
            member = self.members[(turn - 1) % len(self.members)]
            self._speaking = (turn, member.name)
            message = await self._take_turn(turn, member)
            self._speaking = None
            self.transcript.append(message)
            self.tokens += message.tokens
            self.attempts = turn
            self.event(
                "message",
                member=message.member,
                turn=turn,
                text=message.text,
                tokens=message.tokens,
                data=message.data,
            )
            self.store.submit(Update("runs", self.run_id, {"attempts": self.attempts}))
            line = " ".join(message.text.split())
            self.display.message(f"{self.spec.name} [{turn}] {member.name}: {line[:200]}")
            reason = self._reason_to_stop(message)
            if reason is not None:
                return reason

    def _reason_to_stop(self, message: TeamMessage) -> TerminationReason | None:
        termination = self.spec.termination
        mention = termination.mention
        if (
            mention is not None
            and (not mention.sources or message.member in mention.sources)
            and mentions(message.text, mention.text, self.task)
        ):
            return "mention"
        if termination.token_budget is not None and self.tokens >= termination.token_budget:
            return "token_budget"
        if len(self.transcript) >= termination.max_turns:
            return "max_turns"
        return None

    def _terminated(self, reason: TerminationReason | None) -> str | None:
        """Record why the conversation ended and say so; then the final message as the
        run's result, or, for a team with a ``mention`` that ended by another condition
        (its goal not reached), the run's error."""
        assert reason is not None and self.transcript
        self._ended = True
        last = self.transcript[-1]
        termination = self.spec.termination
        details: dict[TerminationReason, str] = {
            "mention": f"{last.member} said {termination.mention.text!r}"
            if termination.mention
            else "",
            "token_budget": f"{self.tokens} tokens of a budget of {termination.token_budget}",
            "max_turns": f"{len(self.transcript)} turns",
            "timeout": f"the timeout of {termination.timeout}",
        }
        mention = termination.mention
        reached = mention is None or reason == "mention"
        self.event(
            "terminated",
            reason=reason,
            detail=details[reason],
            turns=len(self.transcript),
            tokens=self.tokens,
            reached=reached,
        )
        if not reached:
            assert mention is not None
            who = " or ".join(mention.sources) if mention.sources else "any member"
            return (
                f"ended by {reason} ({details[reason]}) without {who} saying "
                f"{mention.text!r}; the last message was turn {last.turn} ({last.member})"
            )
        self.display.message(f"{self.spec.name}: ended by {reason} ({details[reason]})")
        result = {
            "text": last.text,
            "member": last.member,
            "turn": last.turn,
            "data": last.data,
            "terminated": reason,
            "turns": len(self.transcript),
            "tokens": self.tokens,
            "memory": dict(self.memory),
        }
        queries.record_result(self.store, self.run_id, f"{self.run_id}:final", result)
        self.successes = 1
        self.context.result(self.spec, self.run_id, result)
        return None

    # -- one turn ------------------------------------------------------------------------

    def conversation(self, member: AgentSpec) -> list[dict[str, Any]]:
        """The messages of ``member``'s next request (see the module docstring)."""
        variables = {
            **member.vars,
            **self.variables,
            "task": self.task,
            "team": self.spec.name,
            "memory": dict(self.memory),
        }
        others = [m.name for m in self.members if m.name != member.name]
        role = f"You are {member.name}, a member of the team {self.spec.name}"
        role += f" with {', '.join(others)}." if others else "."
        system = render(member.system, variables).rstrip() + "\n\n" if member.system else ""
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": system + role},
            {"role": "user", "content": self.task},
        ]
        for said in self.transcript:
            if said.member == member.name:
                messages.append({"role": "assistant", "content": said.raw})
            else:
                messages.append({"role": "user", "content": f"{said.member}: {said.text}"})
        schema = member.json_schema()
        parts = [self._memory_block(schema)]
        parts.append(render(member.prompt or "", variables).strip())
        parts.append(format_instructions(schema))
        messages.append({"role": "user", "content": "\n\n".join(p for p in parts if p)})
        merged: list[dict[str, Any]] = []
        for message in messages:
            if merged and message["role"] == "user" == merged[-1]["role"]:
                merged[-1] = {
                    "role": "user",
                    "content": f"{merged[-1]['content']}\n\n{message['content']}",
                }
            else:
                merged.append(message)
        return merged

    def _memory_block(self, schema: dict[str, Any] | None) -> str:
        writes = schema is not None and MEMORY_KEY in schema.get("properties", {})
        if not self.memory:
            return "Team memory: (empty)" if writes else ""
        lines = [f"- {key}: {_shown(value)}" for key, value in self.memory.items()]
        return "Team memory:\n" + "\n".join(lines)

    async def _take_turn(self, turn: int, member: AgentSpec) -> TeamMessage:
        schema = member.json_schema()
        messages = self.conversation(member)
        retry = retry_policy(member)
        tokens = 0
        text = ""
        for reask in range(REASKS + 1):
            request = InferenceRequest(
                kind="chat",
                model=member.model or self.spec.model,
                messages=messages,
                params={"temperature": member.temperature, "max_tokens": member.max_tokens},
                json_schema=schema,
                sample=self.sample(turn),
            )
            self.event("request", attempt=turn, turn=reask, member=member.name, messages=messages)
            remaining = None
            if self._deadline is not None:
                remaining = max(self._deadline - time.monotonic(), 0.001)
            completion = await self.router.submit(
                request,
                priority=self.spec.priority,
                engine=member.engine or self.spec.engine,
                retry=retry,
                run_id=self.run_id,
                process=self.spec.name,
                job_id=f"{self.run_id}:{turn}:{reask}",
                use_cache=member.cache and self.spec.cache,
                deadline_s=remaining,
            )
            tokens += completion.prompt_tokens + completion.completion_tokens
            text = completion.text
            self.event(
                "answer",
                attempt=turn,
                turn=reask,
                member=member.name,
                call_id=completion.call_id,
                engine=completion.engine,
                model=completion.model,
                text=text,
                latency_ms=round(completion.latency_ms, 2),
                tokens=completion.prompt_tokens + completion.completion_tokens,
            )
            if schema is None:
                return TeamMessage(turn, member.name, text.strip(), text, tokens)
            try:
                parsed = parse_answer(text, schema)
            except ParseError as exc:
                self.router.reject(completion)
                self.event(
                    "parse_error", attempt=turn, turn=reask, member=member.name, error=exc.message
                )
                messages = [
                    *messages,
                    {"role": "assistant", "content": text},
                    {"role": "user", "content": reask_message(exc)},
                ]
                continue
            self.event(
                "parsed",
                attempt=turn,
                turn=reask,
                member=member.name,
                data=parsed.data,
                repairs=list(parsed.repairs),
            )
            written = parsed.data.get(MEMORY_KEY) if isinstance(parsed.data, dict) else None
            if isinstance(written, dict) and written:
                self._write_memory(member.name, turn, written)
            return TeamMessage(
                turn, member.name, _said(parsed.data, text), text, tokens, parsed.data
            )
        self.failed_attempts += 1
        return TeamMessage(turn, member.name, text.strip(), text, tokens)

    # -- memory --------------------------------------------------------------------------

    def _write_memory(self, member: str, turn: int, updates: dict[str, Any]) -> None:
        """Apply one member's ``memory`` field: set each key, remove those given ``null``."""
        updates = {key: value for key, value in updates.items() if key}
        sets = {key: value for key, value in updates.items() if value is not None}
        try:
            self.memory_state.update(sets)
        except TypeError as exc:
            self.event("error", attempt=turn, member=member, error=str(exc))
            return
        for key in [key for key in updates if key not in sets]:
            self.memory_state.delete(key)
            self.memory.pop(key, None)
        self.memory.update(sets)
        self.event("memory", member=member, turn=turn, updates=updates, memory=dict(self.memory))
