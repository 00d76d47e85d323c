"""Start-up detection: which models an engine serves and which endpoints it answers usably.

One tiny request goes to each endpoint (``/v1/chat/completions``, ``/v1/completions``,
``/v1/embeddings``), and a list of two prompts to ``/v1/completions`` to learn whether it
takes prompt lists. Engines differ, and detection runs once, at start-up, so it must not
be fooled by a moment's trouble nor by an answer it cannot use:

- **It retries.** A 429 (honouring ``Retry-After``, at most ``RETRY_AFTER_MAX_S``), a
  5xx, a 408, a connection failure or a body that is not JSON is asked again, up to
  ``ATTEMPTS`` times with a short backoff. A request that timed out is not: it already
  took the client's whole timeout, and a hung engine should not hold start-up for three.
  An endpoint that still answers 429 after that is taken as served: the engine is there
  and says "later", which the router's own rate-limit handling deals with; removing the
  capability instead made runs exit with "no engine serves any model".
- **It checks the answer's shape.** A 2xx whose body the router could not use (no
  choices, a choice without text, an embedding that is not one list of numbers, like
  llama-cpp-python's server without pooling, which sends one vector per token) does not
  count as the capability; the reason is kept in :attr:`EngineInfo.detail`, so that
  ``agentos engines`` and the run's first lines say why.
- **It gives up early on an engine that is not there.** When the first endpoint cannot
  be reached at all (connection refused, timeout) after the retries, the others are not
  asked: they are on the same host, and a dead engine should not hold start-up for three
  times the retries.

Nothing here raises for a bad engine: every way detection can fail ends in an
``EngineInfo`` that is unhealthy or lacks the capability, with the reason in ``detail``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from agentos.errors import (
    EngineConnectionError,
    EngineError,
    EngineMalformedAnswer,
    EngineStatusError,
    EngineTimeout,
)
from agentos.router.client import EngineClient, EngineInfo

ATTEMPTS = 3
"""Tries of each detection request that fails in a way worth another try."""
BACKOFF_S = 0.25
"""Wait before the second try; doubled before each later one."""
RETRY_AFTER_MAX_S = 5.0
"""The longest ``Retry-After`` detection waits for (start-up should not hang on one)."""


class _Unusable(Exception):
    """A 2xx answer whose shape the router cannot use."""


def _retryable(error: EngineError) -> bool:
    if isinstance(error, EngineStatusError):
        return error.status in (408, 429) or error.status >= 500
    return isinstance(error, EngineConnectionError | EngineMalformedAnswer)


def _unreachable(error: EngineError) -> bool:
    return isinstance(error, EngineConnectionError | EngineTimeout)


def _rate_limited(error: EngineError) -> bool:
    return isinstance(error, EngineStatusError) and error.status == 429


async def _ask(
    client: EngineClient, method: str, path: str, body: Any, *, attempts: int, backoff_s: float
) -> dict[str, Any]:
    """One detection request, retried (module docstring); raises the last EngineError."""
    wait = backoff_s
    for attempt in range(1, attempts + 1):
        try:
            return await client._request(method, path, body)
        except EngineError as exc:
            if attempt >= attempts or not _retryable(exc):
                raise
            pause = wait
            if isinstance(exc, EngineStatusError) and exc.retry_after is not None:
                pause = min(RETRY_AFTER_MAX_S, max(wait, exc.retry_after))
            await asyncio.sleep(pause)
            wait *= 2
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _numbers(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(x, int | float) and not isinstance(x, bool) for x in value)
    )


def check_shape(capability: str, data: dict[str, Any]) -> None:
    """Raise ``_Unusable`` saying what is wrong when ``data`` is not an answer the router
    can use for ``capability``."""
    if capability == "embeddings":
        items = data.get("data")
        if not isinstance(items, list) or not items or not isinstance(items[0], dict):
            raise _Unusable("the answer has no 'data' list of embeddings")
        vector = items[0].get("embedding")
        if isinstance(vector, list) and vector and all(_numbers(v) for v in vector):
            raise _Unusable(
                "the answer holds a list of vectors, one per token, not one vector per "
                "input; start the server with pooling (llama-cpp-python: a pooling type "
                "other than none; llama-server: --pooling mean)"
            )
        if not _numbers(vector):
            raise _Unusable("the embedding is not one list of numbers")
        return
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _Unusable("the answer has no 'choices' list")
    choice = choices[0]
    if capability == "chat":
        message = choice.get("message")
        if not isinstance(message, dict) or not isinstance(message.get("content"), str | None):
            raise _Unusable("the choice has no message with text content")
    elif not isinstance(choice.get("text"), str):
        raise _Unusable("the choice has no text")


async def detect_engine(
    client: EngineClient,
    models: list[str] | None = None,
    *,
    prompt_batching: bool | None = None,
    attempts: int = ATTEMPTS,
    backoff_s: float = BACKOFF_S,
) -> EngineInfo:
    """What ``client``'s engine serves: its models (``models`` when given, else
    ``/v1/models``) and each capability that answered usably, with the reasons for the
    rest in ``detail`` (``"ok"`` when nothing went wrong; the reasons also for a healthy
    engine that lacks a capability). An engine that cannot list its models, or answers no
    endpoint usably, is unhealthy. Whether ``/v1/completions`` takes a list of prompts is
    asked too, unless ``prompt_batching`` is given."""
    info = EngineInfo()
    try:
        if models:
            info.models = list(models)
        else:
            listing = await _ask(
                client, "GET", "/v1/models", None, attempts=attempts, backoff_s=backoff_s
            )
            items = listing.get("data")
            if not isinstance(items, list):
                raise _Unusable("/v1/models has no 'data' list")
            info.models = [str(m["id"]) for m in items if isinstance(m, dict) and "id" in m]
    except EngineError as exc:
        info.detail = exc.message
        return info
    except _Unusable as exc:
        info.detail = f"engine '{client.name}': {exc}"
        return info
    if not info.models:
        info.detail = "serves no models"
        return info
    model = info.models[0]
    probes: dict[str, tuple[str, dict[str, Any]]] = {
        "chat": (
            "/v1/chat/completions",
            {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1},
        ),
        "completions": ("/v1/completions", {"model": model, "prompt": "hi", "max_tokens": 1}),
        "embeddings": ("/v1/embeddings", {"model": model, "input": "hi"}),
    }
    problems: list[str] = []
    answered = False
    for capability, (path, body) in probes.items():
        try:
            data = await _ask(client, "POST", path, body, attempts=attempts, backoff_s=backoff_s)
            answered = True
            check_shape(capability, data)
        except EngineError as exc:
            if _rate_limited(exc):
                answered = True
                info.capabilities.append(capability)
                problems.append(f"{capability}: still rate-limited (429) after {attempts} tries")
                continue
            if _unreachable(exc) and not answered:
                problems.append(f"unreachable: {exc.message}")
                break
            answered = answered or isinstance(exc, EngineStatusError)
            problems.append(f"{capability}: {exc.message}")
            continue
        except _Unusable as exc:
            problems.append(f"{capability}: unusable answer from POST {path}: {exc}")
            continue
        info.capabilities.append(capability)
    info.healthy = bool(info.capabilities)
    info.detail = "; ".join(problems) if problems else "ok"
    if prompt_batching is not None:
        info.prompt_batching = prompt_batching and "completions" in info.capabilities
    elif "completions" in info.capabilities:
        info.prompt_batching = await _takes_prompt_lists(client, model, attempts, backoff_s)
    return info


async def _takes_prompt_lists(
    client: EngineClient, model: str, attempts: int, backoff_s: float
) -> bool:
    body = {"model": model, "prompt": ["hi", "yo"], "max_tokens": 1}
    try:
        data = await _ask(
            client, "POST", "/v1/completions", body, attempts=attempts, backoff_s=backoff_s
        )
    except EngineError:
        return False
    choices = data.get("choices")
    if not isinstance(choices, list) or len(choices) != 2:
        return False
    indexes = [c.get("index") if isinstance(c, dict) else None for c in choices]
    return sorted(i for i in indexes if type(i) is int) == [0, 1]
