"""The OpenAI API of ``agentos serve``: models, chat, completions and embeddings.

Every request becomes router jobs (one per prompt, per text and per choice ``n``) that
go through the one router of the process: the priority queue, the cache, failover, the
record in SQLite, and batching with every other client's and agent's compatible jobs.
Answers are built in OpenAI's shapes from what the router returns; a chat answer an
engine gave as a chat message (tool calls and all) is passed on as it is.

Sampling and the cache: a request with ``seed``, or with ``temperature`` 0, asks for one
reproducible answer and is served from the cache when it has it. Any other request
samples anew: with a temperature and no seed it gets a random seed (recorded with the
request, so a replay asks for the same sample), and it neither reads nor fills the cache.
``X-Agentos-Cache: off`` skips the cache for any request.

Streaming (``stream: true``): the answer comes as server-sent events in OpenAI's chunk
format (role, content, finish reason, usage when ``stream_options.include_usage``, then
``[DONE]``) once the router has it whole. Batching is what makes the engine fast, and a
batch's answers come back together, so agentos does not pass tokens on as the engine
generates them; an error before the answer is an ordinary error answer.
"""

from __future__ import annotations

import array
import asyncio
import base64
import math
import random
import sys
import time
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from agentos.errors import AgentosError
from agentos.router.jobs import Completion, InferenceRequest, RequestKind
from agentos.serve.errors import ApiError, bad_request, from_agentos

if TYPE_CHECKING:
    from agentos.serve.service import Service

CHAT_OWN = frozenset({"model", "messages", "n", "stream", "stream_options", "user"})
COMPLETIONS_OWN = frozenset({"model", "prompt", "n", "stream", "stream_options", "user"})
MAX_N = 128
CACHE_HEADER = "x-agentos-cache"


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(data), status_code=status, media_type="application/json", headers=headers
    )


async def read_json(request: Request) -> dict[str, Any]:
    """The request's JSON body, which must be an object (400 otherwise)."""
    raw = await request.body()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise bad_request("the request body should be a JSON object")
    return body


def _strings(body: dict[str, Any], key: str, plural: str) -> list[str]:
    """``body[key]`` as a list of strings: a string, or a non-empty list of them (400)."""
    given = body.get(key)
    if isinstance(given, str):
        return [given]
    if isinstance(given, list) and given and all(isinstance(t, str) for t in given):
        return given
    raise bad_request(
        f"'{key}' should be a string or a non-empty list of strings "
        f"(token id {plural} are not taken)",
        key,
    )


def _n(body: dict[str, Any]) -> int:
    n = body.get("n", 1)
    if n is None:
        return 1
    if type(n) is not int or not 1 <= n <= MAX_N:
        raise bad_request(f"'n' should be a whole number from 1 to {MAX_N}", "n")
    return n


def _samples(body: dict[str, Any], n: int, headers: Any) -> tuple[list[int], bool]:
    """The sample index of each of ``n`` choices and whether the cache may serve them
    (module docstring)."""
    seed = body.get("seed")
    off = (headers.get(CACHE_HEADER) or "").lower() in ("off", "no", "false", "0")
    if seed is not None:
        if type(seed) is not int:
            raise bad_request("'seed' should be an integer", "seed")
        return [seed + i for i in range(n)], not off
    temperature = body.get("temperature")
    if temperature is not None and (
        type(temperature) not in (int, float) or not math.isfinite(temperature)
    ):
        raise bad_request("'temperature' should be a number", "temperature")
    if temperature == 0:
        return [0] * n, not off
    base = random.getrandbits(31)
    return [base + i for i in range(n)], False


def _usage(completions: list[Completion], n: int) -> dict[str, int]:
    """Usage as OpenAI counts it: every prompt once, however many choices (``n``) it got,
    and every choice's completion. ``completions`` hold each prompt's ``n`` choices one
    after another, and each of them counted its prompt."""
    prompt = sum(c.prompt_tokens for c in completions[::n])
    completion = sum(c.completion_tokens for c in completions)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _choice(completion: Completion) -> dict[str, Any]:
    choices = completion.response.get("choices") if completion.response else None
    first = choices[0] if isinstance(choices, list) and choices else None
    return first if isinstance(first, dict) else {}


def _finish_reason(choice: dict[str, Any]) -> str:
    reason = choice.get("finish_reason")
    return reason if isinstance(reason, str) and reason else "stop"


def _message(completion: Completion, choice: dict[str, Any]) -> dict[str, Any]:
    message = choice.get("message")
    if isinstance(message, dict) and message.get("role") == "assistant":
        return message
    return {"role": "assistant", "content": completion.text}


def _answer_headers(completions: list[Completion]) -> dict[str, str]:
    engines = sorted({c.engine for c in completions})
    hits = sum(c.cache_hit for c in completions)
    return {
        "X-Agentos-Engine": ",".join(engines),
        "X-Agentos-Cache": "hit" if hits == len(completions) else "miss" if not hits else "part",
    }


def _sse(chunks: list[dict[str, Any]], completions: list[Completion]) -> StreamingResponse:
    async def events() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
        yield b"data: [DONE]\n\n"

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            **_answer_headers(completions),
        },
    )


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


class OpenAIApi:
    """The handlers of ``/v1``; ``route`` is the priority a priority route stands for."""

    def __init__(self, service: Service) -> None:
        self.service = service

    # -- what every request does ------------------------------------------------------------

    def _model(self, body: dict[str, Any], kind: RequestKind) -> str:
        model = body.get("model")
        served = self.service.models()
        if not isinstance(model, str) or not model:
            raise bad_request(f"'model' is required: one of {', '.join(served) or 'none'}", "model")
        if model not in served:
            raise ApiError(
                404,
                f"model '{model}' is not served here (models: {', '.join(served) or 'none'}; "
                "GET /v1/models lists them)",
                param="model",
                code="model_not_found",
            )
        probe = InferenceRequest(kind=kind, model=model)
        if not any(e.offers(probe) for e in self.service.router.engines.values()):
            raise bad_request(f"model '{model}' does not serve {kind} requests here", "model")
        return model

    async def _submit(
        self,
        request: Request,
        jobs: list[InferenceRequest],
        route: str | None,
        use_cache: bool,
    ) -> list[Completion]:
        service = self.service
        client, priority = service.admit(request, route, len(jobs))
        deadline = service.config.serve.deadline_s

        def submit(job: InferenceRequest) -> Awaitable[Completion]:
            return service.router.submit(
                job,
                priority=priority,
                process=client.process,
                use_cache=use_cache,
                deadline_s=deadline,
            )

        try:
            if len(jobs) == 1:  # no gather for the usual case: it costs a task per job
                return [await submit(jobs[0])]
            return list(await asyncio.gather(*(submit(job) for job in jobs)))
        except AgentosError as exc:
            raise from_agentos(exc) from None

    # -- the endpoints ------------------------------------------------------------------------

    async def models(self, request: Request) -> Response:
        self.service.admit(request, None, 0)
        return json_response({"object": "list", "data": self.service.model_cards()})

    async def model(self, request: Request) -> Response:
        self.service.admit(request, None, 0)
        name = request.path_params["model"]
        for card in self.service.model_cards():
            if card["id"] == name:
                return json_response(card)
        raise ApiError(404, f"model '{name}' is not served here", code="model_not_found")

    async def chat(self, request: Request, route: str | None = None) -> Response:
        body = await read_json(request)
        model = self._model(body, "chat")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise bad_request("'messages' should be a non-empty list of messages", "messages")
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise bad_request(
                    f"messages[{index}] should be an object with a 'role'", f"messages[{index}]"
                )
        n = _n(body)
        samples, use_cache = _samples(body, n, request.headers)
        params = {k: v for k, v in body.items() if k not in CHAT_OWN}
        jobs = [
            InferenceRequest(kind="chat", model=model, messages=messages, params=params, sample=s)
            for s in samples
        ]
        completions = await self._submit(request, jobs, route, use_cache)
        ident = "chatcmpl-" + completions[0].call_id
        created = int(time.time())
        picked = [(c, _choice(c)) for c in completions]
        if body.get("stream") is True:
            head = {"id": ident, "object": "chat.completion.chunk", "created": created}
            head["model"] = model
            chunks: list[dict[str, Any]] = []
            for index, (c, choice) in enumerate(picked):
                message = _message(c, choice)
                delta: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
                if message.get("tool_calls"):
                    delta["tool_calls"] = [
                        {"index": i, **call} for i, call in enumerate(message["tool_calls"])
                    ]
                chunks.append({**head, "choices": [_delta(index, delta, None)]})
                chunks.append({**head, "choices": [_delta(index, {}, _finish_reason(choice))]})
            if _include_usage(body):
                chunks.append({**head, "choices": [], "usage": _usage(completions, n)})
            return _sse(chunks, completions)
        return json_response(
            {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": index,
                        "message": _message(c, choice),
                        "logprobs": choice.get("logprobs"),
                        "finish_reason": _finish_reason(choice),
                    }
                    for index, (c, choice) in enumerate(picked)
                ],
                "usage": _usage(completions, n),
                "system_fingerprint": None,
            },
            headers=_answer_headers(completions),
        )

    async def completions(self, request: Request, route: str | None = None) -> Response:
        body = await read_json(request)
        model = self._model(body, "completions")
        prompts = _strings(body, "prompt", "prompts")
        n = _n(body)
        samples, use_cache = _samples(body, n, request.headers)
        params = {k: v for k, v in body.items() if k not in COMPLETIONS_OWN}
        jobs = [
            InferenceRequest(kind="completions", model=model, prompt=p, params=params, sample=s)
            for p in prompts
            for s in samples
        ]
        completions = await self._submit(request, jobs, route, use_cache)
        ident = "cmpl-" + completions[0].call_id
        created = int(time.time())
        choices = []
        for index, c in enumerate(completions):
            choice = _choice(c)
            choices.append(
                {
                    "index": index,
                    "text": c.text,
                    "logprobs": choice.get("logprobs"),
                    "finish_reason": _finish_reason(choice),
                }
            )
        head = {"id": ident, "object": "text_completion", "created": created, "model": model}
        if body.get("stream") is True:
            chunks = [
                {**head, "choices": [{**choice, "finish_reason": None}]} for choice in choices
            ]
            chunks += [
                {**head, "choices": [{**choice, "text": "", "logprobs": None}]}
                for choice in choices
            ]
            if _include_usage(body):
                chunks.append({**head, "choices": [], "usage": _usage(completions, n)})
            return _sse(chunks, completions)
        return json_response(
            {**head, "choices": choices, "usage": _usage(completions, n)},
            headers=_answer_headers(completions),
        )

    async def embeddings(self, request: Request, route: str | None = None) -> Response:
        body = await read_json(request)
        model = self._model(body, "embeddings")
        texts = _strings(body, "input", "inputs")
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise bad_request("'encoding_format' should be 'float' or 'base64'", "encoding_format")
        jobs = [InferenceRequest(kind="embeddings", model=model, input=[t]) for t in texts]
        use_cache = (request.headers.get(CACHE_HEADER) or "").lower() not in ("off", "no", "0")
        completions = await self._submit(request, jobs, route, use_cache)
        data = []
        for index, c in enumerate(completions):
            vector = c.embedding or []
            data.append(
                {
                    "object": "embedding",
                    "index": index,
                    "embedding": _base64(vector) if encoding == "base64" else vector,
                }
            )
        prompt = sum(c.prompt_tokens for c in completions)
        return json_response(
            {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
            },
            headers=_answer_headers(completions),
        )


def _delta(index: int, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}


def _base64(vector: list[float]) -> str:
    """A vector as OpenAI's ``encoding_format: base64`` gives it: little-endian float32."""
    packed = array.array("f", vector)
    if sys.byteorder != "little":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")
