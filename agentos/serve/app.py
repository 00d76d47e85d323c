"""The ASGI application of ``agentos serve``: its routes, and how errors are answered.

FastAPI (on Starlette, served by uvicorn): its OpenAPI document (``/openapi.json``,
browsable at ``/docs``) comes from the routes themselves, and llama-cpp-python's server,
which the bundled engine already uses, brings it. The OpenAI handlers take the raw
request and parse it with orjson, so FastAPI adds no validation on the hot path; their
request bodies are described in the document by ``openapi_extra``.

Routes: the OpenAI API under ``/v1``, and again under ``/{priority}/v1`` for each priority
class (``/background/v1`` is the base URL of a client whose requests are background
work); ``/health``; the runs API (:mod:`agentos.serve.runs`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from agentos import __version__
from agentos.router.jobs import PRIORITY_RANK
from agentos.serve.errors import ApiError
from agentos.serve.openai_api import OpenAIApi, json_response
from agentos.serve.service import STOPPED, Service

Handler = Callable[[Request], Awaitable[Response]]

_OBJECT = {"type": "object", "additionalProperties": True}


def _body(required: list[str], properties: dict[str, Any], example: dict[str, Any]) -> Any:
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": required,
                        "properties": properties,
                        "additionalProperties": True,
                    },
                    "example": example,
                }
            },
        }
    }


_CHAT_BODY = _body(
    ["model", "messages"],
    {
        "model": {"type": "string"},
        "messages": {"type": "array", "items": _OBJECT},
        "n": {"type": "integer", "minimum": 1},
        "stream": {"type": "boolean"},
        "seed": {"type": "integer"},
        "temperature": {"type": "number"},
    },
    {"model": "smollm2", "messages": [{"role": "user", "content": "Say hello."}]},
)
_COMPLETIONS_BODY = _body(
    ["model", "prompt"],
    {
        "model": {"type": "string"},
        "prompt": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        "n": {"type": "integer", "minimum": 1},
        "stream": {"type": "boolean"},
        "seed": {"type": "integer"},
        "temperature": {"type": "number"},
    },
    {"model": "smollm2", "prompt": "The capital of France is", "max_tokens": 8},
)
_EMBEDDINGS_BODY = _body(
    ["model", "input"],
    {
        "model": {"type": "string"},
        "input": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        "encoding_format": {"enum": ["float", "base64"]},
    },
    {"model": "smollm2", "input": ["a text to embed"]},
)
_HEADERS_DOC = (
    "\n\nHeaders: `Authorization: Bearer KEY` (when serve.keys are configured), "
    "`X-Agentos-Priority: system|kernel|user|background`, `X-Agentos-Client: NAME` "
    "(a name for `agentos top` when there are no keys), `X-Agentos-Cache: off`."
)


def guarded(service: Service, handler: Callable[..., Awaitable[Response]], *args: Any) -> Handler:
    """``handler`` answering its :class:`ApiError` in OpenAI's shape, and a request the
    shutdown ended with 503 and the reason."""

    async def call(request: Request) -> Response:
        with service.in_flight() as task:
            try:
                return await handler(request, *args)
            except ApiError as exc:
                return exc.response()
            except asyncio.CancelledError:
                if not service.aborting or task is None:
                    raise
                task.uncancel()
                reason = getattr(service, "abort_reason", STOPPED)
                return ApiError(503, reason, code="shutting_down").response()

    return call


def build_app(service: Service) -> FastAPI:
    app = FastAPI(
        title="agentos serve",
        version=__version__,
        description=(
            "The agentos router as an OpenAI-compatible endpoint (every request batched, "
            "queued by priority, cached and recorded with every other client's and "
            "agent's), and agent runs over HTTP." + _HEADERS_DOC
        ),
    )
    api = OpenAIApi(service)
    routes = [
        ("/chat/completions", api.chat, "Chat completion", _CHAT_BODY),
        ("/completions", api.completions, "Text completion", _COMPLETIONS_BODY),
        ("/embeddings", api.embeddings, "Embeddings", _EMBEDDINGS_BODY),
    ]
    for prefix, route in [("", None), *((f"/{p}", p) for p in PRIORITY_RANK)]:
        for path, handler, summary, body in routes:
            app.add_api_route(
                f"{prefix}/v1{path}",
                guarded(service, handler, route),
                methods=["POST"],
                summary=summary + (f" at {route} priority" if route else ""),
                description=(
                    "As OpenAI's API; see the README's `agentos serve` section." + _HEADERS_DOC
                ),
                openapi_extra=body,
                include_in_schema=prefix == "",
                tags=["OpenAI API"],
            )
        app.add_api_route(
            f"{prefix}/v1/models",
            guarded(service, api.models),
            methods=["GET"],
            summary="Models the engines serve",
            include_in_schema=prefix == "",
            tags=["OpenAI API"],
        )
        app.add_api_route(
            f"{prefix}/v1/models/{{model}}",
            guarded(service, api.model),
            methods=["GET"],
            summary="One model",
            include_in_schema=prefix == "",
            tags=["OpenAI API"],
        )

    async def health(request: Request) -> Response:
        return health_response(service)

    app.add_api_route("/health", health, methods=["GET"], summary="Health", tags=["agentos"])

    from agentos.serve.runs import add_run_routes

    add_run_routes(app, service)
    return app


def health_response(service: Service) -> Response:
    """``GET /health``: 200 while some engine can take requests, else 503; no key needed,
    and nothing in it is secret (engine names, states and queue depth)."""
    router = service.router
    engines = [
        {
            "name": e.name,
            "healthy": e.health.available,
            "state": e.health.state,
            "models": list(e.info.models),
            "started": e.started,
        }
        for e in router.engines.values()
    ]
    ok = any(e["healthy"] or not e["started"] for e in engines) and not service.stopping
    status = "ok" if ok else ("stopping" if service.stopping else "no engine")
    return json_response(
        {
            "status": status,
            "uptime_s": round(time.time() - service.started_at, 3),
            "queue": len(router.queue),
            "jobs_done": router.jobs_done,
            "jobs_failed": router.jobs_failed,
            "engines": engines,
        },
        status=200 if ok else 503,
    )
