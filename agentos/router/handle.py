"""What the router knows of each engine, and the interfaces it reports through.

``EngineHandle`` wraps one engine's client with what start-up detection found, its
counters (``stats.py``) and its health (``health.py``): whether it offers a request at all,
whether it can take one *now*, and how loaded it is relative to its capacity.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from agentos.errors import AgentosError, EngineStatusError
from agentos.router.chat_template import ChatTemplate
from agentos.router.client import DEFAULT_MAX_ANSWER_BYTES, EngineClient, EngineInfo
from agentos.router.health import EngineHealth
from agentos.router.jobs import CallRecord, InferenceRequest
from agentos.router.procstat import ServerUsage
from agentos.router.stats import EngineStats


def refused_content(error: Exception) -> bool:
    """A refusal that may be caused by one request's content (a prompt too long, a batch
    too big for the engine), not by the engine or the model: worth trying each job alone."""
    return isinstance(error, EngineStatusError) and error.status in (400, 413, 422)


class CallRecorder(Protocol):
    """Where the router reports each job's part of each request (the store, in practice)."""

    def record_call(self, call: CallRecord) -> None: ...


class AnswerCache(Protocol):
    """A response cache (``cache.ResponseCache``) as the router uses it."""

    def get(
        self, request: InferenceRequest, model: str, *, shape: dict[str, Any] | None = None
    ) -> Any: ...

    def put(
        self,
        request: InferenceRequest,
        model: str,
        *,
        text: str,
        response: dict[str, Any],
        embedding: list[float] | None,
        prompt_tokens: int,
        completion_tokens: int,
        engine: str,
        shape: dict[str, Any] | None = None,
    ) -> str: ...

    def reject(self, key: str, text: str) -> None: ...


@dataclass
class RouterSettings:
    """Router-wide settings (config.yaml ``router:``)."""

    aging_s: float = 5.0
    batch_window_s: float = 0.05
    deadline_s: float = 600.0
    notice_every_s: float = 30.0
    """While jobs wait for engines that do not answer, how often the router says so again."""
    failure_threshold: int = 3
    cooldown_s: float = 2.0
    cooldown_max_s: float = 120.0
    failover_attempts: int = 3
    """Tries of each job of a failed batch, one by one, before the job fails."""
    max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES
    """Most bytes of one answer body the engines' clients read (``client.py``)."""


@dataclass
class EngineHandle:
    """An engine as the router uses it: its client, what it serves, and its counters."""

    name: str
    client: EngineClient
    info: EngineInfo
    max_requests: int
    max_batch_size: int = 1
    weight: float = 1.0
    kind: str = "openai"
    prompt_batching: bool = False
    batch_window_s: float | None = None
    chat_template: ChatTemplate | None = None
    """The model's chat template, where chat jobs may go as batched completions prompts
    (an engine that takes prompt lists and whose template is known)."""
    starter: Callable[[], Awaitable[None]] | None = None
    """For a local engine started on first use: starts its server (and points ``client``
    at it); the router awaits :meth:`ensure_started` before its first request."""
    server_pid: Callable[[], int | None] | None = None
    """For an engine whose server agentos started: its process id now (None while it is
    not running), so that ``top`` can show the server's CPU and memory."""
    server_usage: ServerUsage = field(init=False, default_factory=ServerUsage)
    stats: EngineStats = field(init=False)
    health: EngineHealth = field(init=False)
    answered: bool = field(init=False)
    """The engine has answered usably at least once since start-up (detection, a request
    or a health probe); a local engine started on first use counts until its start fails.
    Jobs for a model whose every engine never answered fail at once instead of waiting."""
    last_error: str = field(init=False, default="")
    """The message of the latest failed request (what the router says while jobs wait)."""
    _starting: asyncio.Future[None] | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        self.stats = EngineStats(
            name=self.name,
            endpoint=self.client.base_url,
            max_requests=self.max_requests,
            max_batch_size=self.max_batch_size if self.prompt_batching else 1,
        )
        self.health = EngineHealth(max_requests=self.max_requests)
        self.answered = self.info.healthy or self.starter is not None
        if not self.info.healthy:
            self.health.open()

    @property
    def healthy(self) -> bool:
        return self.info.healthy

    @property
    def started(self) -> bool:
        """False for a lazily started engine until its server is up."""
        return self.starter is None or (
            self._starting is not None
            and self._starting.done()
            and not self._starting.cancelled()
            and self._starting.exception() is None
        )

    async def ensure_started(self) -> None:
        """Start the engine's server if it has a ``starter`` and was not started yet.

        One start, shared by every job that comes meanwhile (a job cancelled while it
        waits does not cancel the start). A start that failed fails every later call
        with the same error, and the engine then offers nothing, so jobs for its model
        fail at once instead of waiting for it."""
        if self.starter is None:
            return
        if self._starting is None:
            self._starting = asyncio.ensure_future(self.starter())
        try:
            await asyncio.shield(self._starting)
        except AgentosError as exc:
            self.info.models = []
            self.info.healthy = False
            self.answered = False
            self.info.detail = f"could not start: {exc.message}"
            raise

    async def stop_starting(self) -> None:
        """Cancel a start still under way (the engine is being closed)."""
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
            await asyncio.gather(self._starting, return_exceptions=True)

    def offers(self, request: InferenceRequest) -> bool:
        """Whether this engine serves the request's model and kind at all (any health)."""
        if request.kind not in self.info.capabilities and self.info.capabilities:
            return False
        if not self.info.models:
            return False
        return request.model is None or request.model in self.info.models

    def trouble(self) -> str:
        """Why the engine gets no traffic now, for messages: its last error, else what
        detection or the last health probe found."""
        return self.last_error or self.info.detail or self.health.state

    def serves(self, request: InferenceRequest) -> bool:
        return self.health.available and bool(self.info.capabilities) and self.offers(request)

    def has_room(self) -> bool:
        return self.health.available and self.stats.in_flight < self.health.limit

    def load(self, best_latency: float | None = None) -> float:
        capacity = self.health.limit * max(self.weight, 1e-9)
        return (self.stats.in_flight + 1) / capacity * self.health.penalty(best_latency)

    def as_prompt(self, request: InferenceRequest) -> bool:
        """Whether this engine gets a chat request as a completions prompt rendered with
        the model's chat template (so that it can share a batch)."""
        return (
            self.prompt_batching
            and self.chat_template is not None
            and request.kind == "chat"
            and "completions" in self.info.capabilities
            and self.chat_template.takes(request.messages, request.params)
        )

    def cache_shape(self, request: InferenceRequest) -> dict[str, Any]:
        """What this engine changes in the body it sends for ``request`` beyond the request
        itself, as part of the request's cache key (``cache.py``): the response format
        that ``structured_output`` adds, and the chat template (a digest of it) where a
        chat job goes as a completions prompt. Empty where the request goes as it is."""
        shape: dict[str, Any] = {}
        if request.json_schema is not None and self.client.structured_output:
            shape["response_format"] = "json_object"
        if self.as_prompt(request):
            assert self.chat_template is not None
            template = self.chat_template
            spec = "\0".join(
                [template.template, template.bos_token, template.eos_token, *template.stop]
            )
            spec += f"\0{template.add_bos}"
            shape["chat_template"] = hashlib.sha256(spec.encode("utf-8")).hexdigest()[:16]
        return shape

    def batch_cap(self, request: InferenceRequest) -> int:
        if self.prompt_batching and (request.kind == "completions" or self.as_prompt(request)):
            return max(1, self.max_batch_size)
        if request.kind == "embeddings" and len(request.input or ()) == 1:
            # ``input`` is a list in every OpenAI-compatible embeddings endpoint
            return max(1, self.max_batch_size)
        return 1
