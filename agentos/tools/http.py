"""The ``http_get`` tool: one GET to a host the config allows, within size and time limits.

- Only ``http`` and ``https`` URLs, and only to hosts in ``tools.http.allow_hosts`` (an
  exact name such as ``api.example.com``, ``127.0.0.1`` or ``[::1]``, or a suffix pattern
  such as ``*.example.com``), each optionally with a port (``127.0.0.1:8080`` allows that
  port only; the URL's port is its explicit one or the scheme's, 80 or 443). An empty
  list refuses every URL: a fresh install reaches nothing. Host and port are checked
  before any connection is made.
- Redirects are followed by hand, at most ``max_redirects``, and each new location is
  checked against the allow-list like the first URL, so an allowed host cannot bounce
  the tool to one that is not.
- The body is read in chunks and the call is refused as soon as it passes ``max_bytes``
  (a ``Content-Length`` that says so is refused before reading), so an oversized answer
  never sits in memory or in the record.
- The whole call, redirects included, has ``timeout`` seconds.

An answer with an error status is a failed call (5xx and 429 count as transient, so a
planner retries them); a 2xx or 3xx-without-location answer is the output: final URL,
status, content type and the body as text.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from agentos.spec.config import HttpToolConfig, ToolsConfig
from agentos.tools.types import PlanExample, Tool, ToolContext, ToolError


def host_allowed(host: str, allow_hosts: list[str], *, port: int | None = None) -> bool:
    """Whether ``host`` (reached on ``port``) is one of ``allow_hosts``: names, ``[IPv6]``
    or ``*.suffix`` patterns, each optionally with ``:port`` (then only that port)."""
    host = host.lower().rstrip(".")
    for entry in allow_hosts:
        pattern, only_port = _pattern(entry)
        if only_port is not None and port != only_port:
            continue
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


def _pattern(entry: str) -> tuple[str, int | None]:
    """An ``allow_hosts`` entry as (host pattern, port or None); a bare IPv6 address
    (``::1``) has no port, ``[::1]:8080`` has. Entries were checked when the config was
    loaded; a port that is no number here matches nothing."""
    text = entry.strip().lower()
    port: str | None = None
    if text.startswith("["):
        text, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    elif text.count(":") == 1:
        text, port = text.split(":")
    if port is None:
        return text.rstrip("."), None
    return text.rstrip("."), int(port) if port.isdigit() else -1


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _checked_url(url: str, config: HttpToolConfig, tool: str = "http_get") -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        raise ToolError(f"'{url}' is not an http:// or https:// URL")
    host = parts.hostname or ""
    if not host:
        raise ToolError(f"'{url}' has no host")
    try:
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
    except ValueError as exc:
        raise ToolError(f"'{url}' has a bad port: {exc}") from None
    if not host_allowed(host, config.allow_hosts, port=port):
        allowed = ", ".join(config.allow_hosts) or "none (tools.http.allow_hosts is empty)"
        what = f"host '{host}'"
        if host_allowed(host, [_pattern(e)[0] for e in config.allow_hosts]):
            what = f"port {port} of host '{host}'"
        raise ToolError(
            f"{what} is not allowed; {tool} may fetch from: {allowed}. "
            "Add it to tools.http.allow_hosts in config.yaml to allow it"
        )
    return url.strip()


async def http_get(url: str, config: HttpToolConfig, *, tool: str = "http_get") -> dict[str, Any]:
    """GET ``url`` within ``config``'s limits; the answer as a dict (see module docstring).

    ``tool``: the tool whose call this is (``web_fetch`` and ``web_search`` fetch through
    here too), named in refusals."""
    current = _checked_url(url, config, tool)
    try:
        async with asyncio.timeout(config.timeout):
            async with httpx.AsyncClient(follow_redirects=False, timeout=config.timeout) as client:
                for _ in range(config.max_redirects + 1):
                    async with client.stream("GET", current) as response:
                        location = response.headers.get("location")
                        if response.is_redirect and location:
                            current = _checked_url(urljoin(current, location), config, tool)
                            continue
                        body = await _read_limited(response, config.max_bytes, tool)
                        return _answer(current, response, body)
                raise ToolError(f"more than {config.max_redirects} redirects from '{url}'")
    except TimeoutError:
        raise ToolError(
            f"'{url}' did not answer within {config.timeout:g}s", transient=True
        ) from None
    except httpx.HTTPError as exc:
        raise ToolError(
            f"GET '{url}' failed: {type(exc).__name__}: {exc}", transient=True
        ) from None


async def _read_limited(response: httpx.Response, max_bytes: int, tool: str) -> bytes:
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ToolError(
            f"the answer is {int(declared)} bytes; {tool} reads at most {max_bytes} "
            "(tools.http.max_bytes)"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise ToolError(
                f"the answer is larger than {max_bytes} bytes, {tool}'s limit "
                "(tools.http.max_bytes)"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _answer(url: str, response: httpx.Response, body: bytes) -> dict[str, Any]:
    text = body.decode(response.encoding or "utf-8", errors="replace")
    if response.status_code >= 400:
        transient = response.status_code >= 500 or response.status_code == 429
        raise ToolError(
            f"GET '{url}' answered {response.status_code}: {text[:200]}", transient=transient
        )
    return {
        "url": url,
        "status": response.status_code,
        "content_type": response.headers.get("content-type", ""),
        "text": text,
    }


def url_parameters(description: str) -> dict[str, Any]:
    """The JSON Schema of a tool whose one argument is ``url`` (``http_get``, ``web_fetch``)."""
    return {
        "type": "object",
        "properties": {
            "url": {"type": "string", "minLength": 1, "maxLength": 500, "description": description}
        },
        "required": ["url"],
        "additionalProperties": False,
    }


def http_get_tool(config: ToolsConfig) -> Tool:
    async def run(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        return await http_get(str(arguments["url"]), context.config.http)

    return Tool(
        name="http_get",
        description="Fetch a web page or API answer (GET) from an allowed host.",
        parameters=url_parameters("the http:// or https:// address to fetch"),
        function=run,
        timeout_s=config.http.timeout + 1.0,
        side_effects=False,
        examples=(
            PlanExample("Get https://example.com", (("http_get", {"url": "https://example.com"}),)),
        ),
    )
