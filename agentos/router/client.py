"""The HTTP client for one OpenAI-compatible engine.

It speaks ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions`` and
``/v1/embeddings`` and turns every way a request can fail into one of the ``EngineError``
classes the router tells apart (timeout, connection, status, malformed answer).

Why aiohttp and orjson: the client is on the path of every model call. Under 64
concurrent requests httpx's connection pool scans every connection for every request
(``httpcore`` ``_assign_requests_to_connections``/``is_idle``: about 70 % of 5 ms of CPU per
chat job in the profile), which held agentos to under 200 jobs/s against an engine that
takes thousands; aiohttp's connector hands out keep-alive connections in O(1) and costs
about 0.25 ms per request on the same machine.

The API key lives only in the ``Authorization`` header of the client session: it is
never part of a request body, a log line, an error message or a stored record.
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from agentos.errors import (
    EngineConnectionError,
    EngineError,
    EngineMalformedAnswer,
    EngineStatusError,
    EngineTimeout,
)
from agentos.router.jobs import InferenceRequest

CAPABILITIES = ("chat", "completions", "embeddings")


@dataclass
class EngineInfo:
    """What start-up detection found out about an engine."""

    models: list[str] = field(default_factory=list)
    capabilities: list[str] = field(default_factory=list)
    healthy: bool = False
    detail: str = ""
    prompt_batching: bool = False
    """``/v1/completions`` answered a list of two prompts with one choice for each."""


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After is either delta-seconds or an HTTP date. A value that is not a finite
    number of seconds (``inf``, ``nan``) is unusable: honouring it would park a job forever."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def encode_json(body: Any) -> bytes:
    """A request body as JSON bytes: orjson, or the standard library for what orjson
    refuses (integers beyond 64 bits, non-string keys)."""
    try:
        return orjson.dumps(body)
    except TypeError:
        return json.dumps(body).encode()


def _error_detail(raw: bytes, reason: str) -> str:
    try:
        body = orjson.loads(raw)
    except ValueError:
        text = raw.decode("utf-8", errors="replace").strip()
        return text[:200] if text else reason
    if isinstance(body, dict):
        err = body.get("error", body.get("detail", body))
        if isinstance(err, dict):
            return str(err.get("message", err))[:300]
        return str(err)[:300]
    return str(body)[:300]


class EngineClient:
    """Requests to one engine. One ``aiohttp.ClientSession`` whose connector is sized to
    the engine's ``max_requests``, so concurrency is bounded twice: by the router's
    admission and by the pool. The session is made on first use, inside the event loop
    that uses it."""

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        headers: dict[str, str] | None = None,
        max_connections: int = 16,
        structured_output: bool = False,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        if self.base_url.endswith("/v1"):
            self.base_url = self.base_url[: -len("/v1")]
        self.structured_output = structured_output
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.timeout = timeout
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._proxy: URL | None = None
        self._proxy_auth: aiohttp.BasicAuth | None = None

    def _open(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None or session.closed:
            session = self._session = aiohttp.ClientSession(
                headers=self.headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout, connect=min(self.timeout, 10.0)),
                connector=aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=0),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            # the proxy from the environment (HTTP(S)_PROXY, NO_PROXY) is looked up once
            # here, not in a thread per request as ``trust_env`` would
            try:
                self._proxy, self._proxy_auth = get_env_proxy_for_url(URL(self.base_url))
            except LookupError:
                self._proxy, self._proxy_auth = None, None
        return session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        payload = None if body is None else encode_json(body)
        try:
            async with self._open().request(method, self.base_url + path, data=payload) as response:
                status = response.status
                raw = await response.read()
                reason = response.reason or ""
                retry_after = response.headers.get("retry-after")
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise EngineTimeout(
                f"no answer to {method} {path} in time ({type(exc).__name__})", engine=self.name
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise EngineConnectionError(
                f"{method} {path} failed: {type(exc).__name__}: {exc}", engine=self.name
            ) from None
        if status >= 400:
            raise EngineStatusError(
                f"{method} {path} answered {status}: {_error_detail(raw, reason)}",
                engine=self.name,
                status=status,
                retry_after=parse_retry_after(retry_after),
            )
        try:
            data = orjson.loads(raw)
        except ValueError:
            raise EngineMalformedAnswer(
                f"{method} {path} answered {status} with a body that is not JSON",
                engine=self.name,
            ) from None
        if not isinstance(data, dict):
            raise EngineMalformedAnswer(
                f"{method} {path} answered JSON that is not an object", engine=self.name
            )
        return data

    async def list_models(self) -> list[str]:
        data = await self._request("GET", "/v1/models")
        items = data.get("data")
        if not isinstance(items, list):
            raise EngineMalformedAnswer("/v1/models has no 'data' list", engine=self.name)
        return [str(m["id"]) for m in items if isinstance(m, dict) and "id" in m]

    async def detect(
        self, models: list[str] | None = None, *, prompt_batching: bool | None = None
    ) -> EngineInfo:
        """What the engine serves: :func:`agentos.router.detection.detect_engine`."""
        from agentos.router.detection import detect_engine

        return await detect_engine(self, models, prompt_batching=prompt_batching)

    async def props(self) -> dict[str, Any] | None:
        """llama-server's ``GET /props`` (the model's chat template and special tokens);
        None where the engine has no such endpoint."""
        try:
            return await self._request("GET", "/props")
        except EngineError:
            return None

    def build_body(self, request: InferenceRequest, model: str) -> tuple[str, dict[str, Any]]:
        """The endpoint path and JSON body for a request (exactly what is sent and stored)."""
        if request.kind == "embeddings":
            return "/v1/embeddings", {"model": model, "input": request.input or []}
        body: dict[str, Any] = {"model": model, **request.params}
        if request.json_schema is not None and self.structured_output:
            body["response_format"] = {"type": "json_object", "schema": request.json_schema}
        if request.kind == "chat":
            body["messages"] = request.messages or []
            return "/v1/chat/completions", body
        body["prompt"] = request.prompt or ""
        return "/v1/completions", body

    async def send(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        data = await self._request("POST", path, body)
        key = "data" if path.endswith("embeddings") else "choices"
        if not isinstance(data.get(key), list) or not data[key]:
            raise EngineMalformedAnswer(f"{path} answer has no '{key}'", engine=self.name)
        return data


def answer_text(path: str, response: dict[str, Any]) -> str:
    """The generated text of the first choice of a chat or completions answer."""
    choice = response["choices"][0]
    if not isinstance(choice, dict):
        raise EngineMalformedAnswer(f"{path} choice is not an object")
    if path.endswith("chat/completions"):
        message = choice.get("message")
        if not isinstance(message, dict):
            raise EngineMalformedAnswer(f"{path} choice has no message")
        return str(message.get("content") or "")
    return str(choice.get("text") or "")


def usage_tokens(response: dict[str, Any]) -> tuple[int, int]:
    usage = response.get("usage")
    if not isinstance(usage, dict):
        return 0, 0
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
