"""Errors as OpenAI's API gives them: ``{"error": {"message", "type", "param", "code"}}``.

Every failure a client can meet has its status and type here, so the openai SDK, ``llm``
and LangChain raise the exception they raise against OpenAI (``BadRequestError``,
``AuthenticationError``, ``NotFoundError``, ``RateLimitError`` …) with our message.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from agentos.errors import AgentosError, EngineError, EngineStatusError, NoEngineError
from agentos.redaction import redact

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "server_error",
    503: "server_error",
}


class ApiError(Exception):
    """A request that ends with an OpenAI-shaped error answer."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": redact(self.message),
                "type": _TYPES.get(self.status, "server_error"),
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> Response:
        return Response(
            orjson.dumps(self.body()),
            status_code=self.status,
            media_type="application/json",
            headers=self.headers,
        )


def bad_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code="invalid_request")


def from_agentos(exc: AgentosError) -> ApiError:
    """The answer for a request the router could not serve.

    No engine can serve it now (none answered, all cooling down past the deadline): 503.
    The engine refused the request itself (400, 404, 413, 422: a parameter it does not
    take, a prompt too long for its context): the same client error, with the engine's
    words. Any other engine failure, after the router's retries and failover: 502.
    """
    if isinstance(exc, NoEngineError):
        return ApiError(503, exc.message, code="no_engine", headers={"Retry-After": "5"})
    if isinstance(exc, EngineStatusError) and exc.status in (400, 404, 413, 422):
        return ApiError(400, exc.message, code="engine_rejected_request")
    if isinstance(exc, EngineError):
        return ApiError(502, exc.message, code="engine_error")
    return ApiError(500, exc.message, code="internal_error")
