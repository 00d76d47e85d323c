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
never part of a request body, a log line, an error message or a stored record. An engine
that echoes it (a 401 body quoting the header) cannot bring it back in either: every body
is read through :func:`agentos.redaction.redact_bytes`, every error message through
:func:`agentos.redaction.redact`.

Answers are not trusted: whatever an engine sends either becomes a dict the rest of
agentos can store and read back, or an ``EngineMalformedAnswer`` that says what was
wrong. The client reads at most ``max_answer_bytes`` of a body (a longer answer fails
without being read into memory), refuses JSON nested deeper than
:data:`MAX_ANSWER_DEPTH` (the store's JSON codec and ``json.loads`` in ``replay`` and
``export`` recurse), and :func:`answer_text` / :func:`token_count` accept only what the
API promises (a string of content, token counts that are small non-negative integers).
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
from agentos.redaction import redact, redact_bytes, register, register_headers
from agentos.router.jobs import InferenceRequest
from agentos.store.codec import nested_deeper_than

CAPABILITIES = ("chat", "completions", "embeddings")

DEFAULT_MAX_ANSWER_BYTES = 8 * 1024 * 1024
"""Most bytes of one answer body that are read (``router.max_answer_bytes``)."""

MAX_ANSWER_DEPTH = 128
"""Deepest nesting of arrays and objects accepted in an answer. Real answers nest under
ten levels (``choices[].logprobs.content[].top_logprobs[]``); orjson writes at most 255
and ``json.loads`` reads about 990, and what is stored is read back by both."""

_MAX_TOKENS = 2**53
"""Largest token count taken from ``usage`` (SQLite INTEGER holds 2**63 - 1)."""


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


def token_count(value: Any) -> int:
    """A ``usage`` token count as the API promises it (a non-negative integer), else 0:
    strings, lists, booleans, negative or non-finite numbers and counts beyond 2**53 are
    garbage that must neither crash the router nor overflow an INTEGER column."""
    kind = type(value)
    if kind is int:
        return value if 0 <= value < _MAX_TOKENS else 0
    if kind is float:
        return int(value) if 0 <= value < _MAX_TOKENS and value.is_integer() else 0
    if kind is str and value.isascii() and value.isdecimal() and len(value) < 16:
        return int(value)
    return 0


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
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        if self.base_url.endswith("/v1"):
            self.base_url = self.base_url[: -len("/v1")]
        self.structured_output = structured_output
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        register_headers(self.headers)
        if api_key:
            register(api_key)
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.timeout = timeout
        self.max_answer_bytes = max_answer_bytes
        """Most bytes of a body read; the router sets it from ``router.max_answer_bytes``."""
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
                raw = await self._read(response)
                reason = response.reason or ""
                retry_after = response.headers.get("retry-after")
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise EngineTimeout(
                f"no answer to {method} {path} in time ({type(exc).__name__})", engine=self.name
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise EngineConnectionError(
                redact(f"{method} {path} failed: {type(exc).__name__}: {exc}"), engine=self.name
            ) from None
        if raw is None:
            raise EngineMalformedAnswer(
                f"{method} {path} answered {status} with more than {self.max_answer_bytes} "
                "bytes (router.max_answer_bytes): the answer was cut there, not read further "
                "and not used",
                engine=self.name,
            )
        raw = redact_bytes(raw)
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
        if raw.count(b"[") + raw.count(b"{") > MAX_ANSWER_DEPTH and nested_deeper_than(
            data, MAX_ANSWER_DEPTH
        ):
            raise EngineMalformedAnswer(
                f"{method} {path} answered JSON nested deeper than {MAX_ANSWER_DEPTH} levels",
                engine=self.name,
            )
        return data

    async def _read(self, response: aiohttp.ClientResponse) -> bytes | None:
        """The body, or None when it is longer than ``max_answer_bytes`` (then at most
        that much plus one chunk was read). A body whose length is declared and within the
        cap, and not compressed (a small gzip body can inflate to any size), is read in
        one call, as before."""
        cap = self.max_answer_bytes
        declared = response.content_length
        if declared is not None and "Content-Encoding" not in response.headers:
            if declared > cap:
                return None
            return await response.read()
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = await response.content.read(cap + 1 - size)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
            if size > cap:
                return None

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


def answer_text(path: str, response: dict[str, Any], engine: str = "") -> str:
    """The generated text of the first choice of a chat or completions answer: a string
    (null and a missing one read as empty); content of any other type is malformed."""
    choice = response["choices"][0]
    if not isinstance(choice, dict):
        raise EngineMalformedAnswer(f"{path} choice is not an object", engine=engine)
    if path.endswith("chat/completions"):
        message = choice.get("message")
        if not isinstance(message, dict):
            raise EngineMalformedAnswer(f"{path} choice has no message", engine=engine)
        text, field_name = message.get("content"), "message content"
    else:
        text, field_name = choice.get("text"), "choice text"
    if type(text) is str:
        return text
    if text is None:
        return ""
    raise EngineMalformedAnswer(
        f"{path} {field_name} is {_json_type(text)}, not a string", engine=engine
    )


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def usage_tokens(response: dict[str, Any] | None) -> tuple[int, int]:
    """Prompt and completion tokens of an answer's ``usage`` (0 for what is garbage)."""
    usage = response.get("usage") if response else None
    if type(usage) is not dict:
        return 0, 0
    return token_count(usage.get("prompt_tokens")), token_count(usage.get("completion_tokens"))
