"""The web tools: ``web_fetch`` reads a page as text, ``web_search`` searches the web.

Both are read-only and cached (:mod:`agentos.tools.cache`): the same page or query within
its ``ttl`` (``tools.web_fetch.ttl``, ``tools.web_search.ttl``) is answered from the
database without a request, and the call is recorded as a cache hit.

``web_fetch`` fetches through :func:`agentos.tools.http.http_get`, so it reaches only the
hosts of ``tools.http.allow_hosts``, follows redirects only to them, and keeps to the size
and time limits of ``tools.http``. An HTML answer becomes readable text with trafilatura
(the main content, without navigation, footers and scripts; the whole page's text when
trafilatura finds no main content); a text or JSON answer is returned as it is; anything
else is refused. The text is cut at ``tools.web_fetch.max_chars``, and the answer says so.

``web_search`` asks a search backend, chosen in ``tools.web_search``:

- ``searxng_url``: a SearXNG instance's JSON API (``GET /search?q=...&format=json``),
  fetched through ``http_get`` with that instance's host and port as the only allowed
  host (the instance is the user's choice in config.yaml, so it need not be in
  ``tools.http.allow_hosts``; its redirects elsewhere are refused) and the limits of
  ``tools.http``.
- ``backend``: a Python function ``package.module:function(query, max_results)`` that
  returns ``[{"title", "url", "snippet"}, ...]``, loaded and run like a user tool (a
  sync one in a worker process), for any other search service.

The answer is ``{"query", "results": [{"title", "url", "snippet"}, ...]}``, at most
``max_results`` results.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from agentos.errors import SpecError
from agentos.router.cache import parse_duration
from agentos.spec.config import ToolsConfig, WebSearchConfig
from agentos.tools.http import http_get, url_parameters
from agentos.tools.types import (
    DEFAULT_TIMEOUT_S,
    PlanExample,
    StepCheck,
    Tool,
    ToolContext,
    ToolError,
)

_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/xhtml")
_DEFAULT_PORTS = {"http": 80, "https": 443}


# -- web_fetch -------------------------------------------------------------------------


def readable_text(body: str, content_type: str, url: str) -> tuple[str, str]:
    """(title, text) of a page: the main content of HTML (trafilatura), other text as is.

    Raises ToolError for content that is not text (an image, a PDF)."""
    kind = content_type.split(";", 1)[0].strip().lower()
    looks_html = not kind and body.lstrip()[:1] == "<"
    if "html" in kind or looks_html:
        import trafilatura

        text = trafilatura.extract(body, url=url, include_comments=False, include_tables=True)
        if not text:
            text = trafilatura.html2txt(body)
        metadata = trafilatura.extract_metadata(body)
        title = (metadata.title if metadata is not None else None) or ""
        return title.strip(), (text or "").strip()
    if not kind or kind.startswith(_TEXT_TYPES) or kind.endswith(("+json", "+xml")):
        return "", body.strip()
    raise ToolError(f"'{url}' is {kind}; web_fetch reads HTML and text pages only")


async def web_fetch(url: str, config: ToolsConfig) -> dict[str, Any]:
    """Fetch ``url`` within ``config.http``'s hosts and limits; its readable text."""
    answer = await http_get(url, config.http, tool="web_fetch")
    title, text = await asyncio.to_thread(
        readable_text, answer["text"], answer["content_type"], answer["url"]
    )
    limit = config.web_fetch.max_chars
    return {
        "url": answer["url"],
        "title": title,
        "text": text[:limit],
        "truncated": len(text) > limit,
    }


def normalised_url(url: str) -> str:
    """``url`` as the cache sees it: scheme and host lower-cased, the scheme's own port and
    the ``#fragment`` dropped, an empty path written ``/``. Not a URL check (the fetch
    does that); text that does not split as a URL is returned stripped."""
    text = url.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return text
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        host = f"{host}:{port}"
    return urlunsplit((scheme, host, parts.path or "/", parts.query, ""))


def _url_in_request(arguments: dict[str, Any], request: str) -> StepCheck:
    url = str(arguments.get("url", ""))
    if url and normalised_url(url) in {normalised_url(u) for u in _URLS.findall(request)}:
        return StepCheck(True, f"{url} is the address the request gives")
    return StepCheck(None, f"the request does not give {url} itself")


_URLS = re.compile(r"https?://[^\s\"'<>)\]]+")


def web_fetch_tool(config: ToolsConfig) -> Tool:
    limit = config.web_fetch.max_chars

    async def run(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        return await web_fetch(str(arguments["url"]), context.config)

    return Tool(
        name="web_fetch",
        description="Read a web page from an allowed host as plain text (its main content).",
        parameters=url_parameters("the http:// or https:// address of the page"),
        function=run,
        timeout_s=config.http.timeout + 5.0,
        side_effects=False,
        check=_url_in_request,
        cache_ttl_s=parse_duration(config.web_fetch.ttl, key="tools.web_fetch.ttl"),
        cache_key=lambda arguments: {
            "url": normalised_url(str(arguments.get("url", ""))),
            "max_chars": limit,
        },
        examples=(
            PlanExample(
                "Read the article at https://example.com/news/today",
                (("web_fetch", {"url": "https://example.com/news/today"}),),
            ),
            PlanExample(
                "What does the page https://example.org/about say?",
                (("web_fetch", {"url": "https://example.org/about"}),),
            ),
        ),
    )


# -- web_search ------------------------------------------------------------------------


def folded_query(query: str) -> str:
    """``query`` with runs of white space made one space, ends stripped."""
    return " ".join(query.split())


def _instance_host(url: str) -> str:
    """The ``allow_hosts`` entry (host:port) of a SearXNG base URL."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or _DEFAULT_PORTS[parts.scheme]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def searxng_search(query: str, config: ToolsConfig) -> list[dict[str, Any]]:
    """Results of ``query`` from the SearXNG instance at ``tools.web_search.searxng_url``."""
    base = config.web_search.searxng_url
    assert base is not None
    url = f"{base.rstrip('/')}/search?{urlencode({'q': query, 'format': 'json'})}"
    limits = config.http.model_copy(update={"allow_hosts": [_instance_host(base)]})
    try:
        answer = await http_get(url, limits, tool="web_search")
    except ToolError as exc:
        if "answered 403" in exc.message:
            raise ToolError(
                f"{exc.message} (SearXNG refuses format=json unless `json` is listed in "
                "search.formats of its settings.yml)"
            ) from None
        raise
    try:
        data = json.loads(answer["text"])
    except ValueError:
        raise ToolError(
            f"the SearXNG instance at {base} did not answer JSON (is `json` listed in "
            "search.formats of its settings.yml?)"
        ) from None
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, list):
        raise ToolError(f"the SearXNG answer from {base} has no list of results")
    return [
        {"title": r.get("title") or "", "url": r.get("url"), "snippet": r.get("content") or ""}
        for r in results
        if isinstance(r, dict)
    ]


async def backend_search(
    query: str, config: WebSearchConfig, context: ToolContext
) -> list[dict[str, Any]]:
    """Results of ``query`` from the user's function at ``tools.web_search.backend``."""
    from agentos.tools.user import load_user_tool

    assert config.backend is not None
    try:
        backend = load_user_tool(config.backend, Path.cwd(), agent=context.agent)
    except SpecError as exc:
        raise ToolError(f"tools.web_search.backend: {exc.reason}") from None
    if backend.prepare is not None:
        await backend.prepare()
    found = await backend.function({"query": query, "max_results": config.max_results}, context)
    if not isinstance(found, list) or not all(
        isinstance(r, dict) and isinstance(r.get("url"), str) for r in found
    ):
        raise ToolError(
            f"the search backend {config.backend} should return a list of objects with a "
            f"'url' (and 'title', 'snippet'), not {_short(found)}"
        )
    return [
        {
            "title": str(r.get("title") or ""),
            "url": r["url"],
            "snippet": str(r.get("snippet") or ""),
        }
        for r in found
    ]


async def web_search(query: str, config: ToolsConfig, context: ToolContext) -> dict[str, Any]:
    """Search for ``query`` with the configured backend (module docstring)."""
    query = folded_query(query)
    if not query:
        raise ToolError("web_search needs a query")
    search = config.web_search
    if search.searxng_url is not None:
        results = await searxng_search(query, config)
    elif search.backend is not None:
        results = await backend_search(query, search, context)
    else:
        raise ToolError(
            "web_search has no search backend: set tools.web_search.searxng_url (a SearXNG "
            "instance) or tools.web_search.backend (a function) in config.yaml"
        )
    return {"query": query, "results": results[: search.max_results]}


def _query_in_request(arguments: dict[str, Any], request: str) -> StepCheck:
    words = set(re.findall(r"\w+", str(arguments.get("query", "")).lower()))
    said = set(re.findall(r"\w+", request.lower()))
    if words and words <= said:
        return StepCheck(True, "every word of the query is in the request")
    return StepCheck(None, f"the query has words the request does not: {sorted(words - said)}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def web_search_tool(config: ToolsConfig) -> Tool:
    search = config.web_search
    where = search.searxng_url or search.backend

    async def run(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        return await web_search(str(arguments["query"]), context.config, context)

    return Tool(
        name="web_search",
        description="Search the web; the results' titles, addresses and snippets.",
        parameters={
            "type": "object",
            "properties": {
                "query": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 300,
                    "description": "what to search for",
                }
            },
            "required": ["query"],
            "additionalProperties": False,
        },
        function=run,
        timeout_s=config.http.timeout + 1.0 if search.searxng_url else DEFAULT_TIMEOUT_S,
        side_effects=False,
        check=_query_in_request,
        cache_ttl_s=parse_duration(search.ttl, key="tools.web_search.ttl"),
        cache_key=lambda arguments: {
            "query": folded_query(str(arguments.get("query", ""))),
            "backend": where,
            "max_results": search.max_results,
        },
        examples=(
            PlanExample(
                "Search the web for the tallest mountain in Africa",
                (("web_search", {"query": "tallest mountain in Africa"}),),
            ),
            PlanExample(
                "Look up reviews of the Framework laptop",
                (("web_search", {"query": "Framework laptop reviews"}),),
            ),
        ),
    )
