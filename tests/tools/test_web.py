"""web_fetch and web_search: readable text, allowed hosts only, a SearXNG backend or a
user function, and every answer cached in the database for its TTL.

Pages and a fake SearXNG ``/search?format=json`` are served by the loopback web server
of ``conftest.py``, whose ``hits`` list every request that reached it; calls go through
the real registry into a real database; the end-to-end test runs a planner agent against
the loopback test engine."""

from __future__ import annotations

import io
import json
import sqlite3
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from agentos.agents.ask import ask_spec
from agentos.agents.planner import PlanOutcome
from agentos.errors import SpecError
from agentos.scheduler.display import PlainDisplay
from agentos.scheduler.runner import run_agents
from agentos.spec.agents import AgentSpec, load_agents
from agentos.spec.config import (
    Config,
    EmbeddingsConfig,
    HttpToolConfig,
    OpenAIEngineConfig,
    ToolsConfig,
    WebFetchConfig,
    WebSearchConfig,
    load_config,
)
from agentos.store import Store, queries
from agentos.testing.engine import LoopbackEngine
from agentos.tools.registry import ToolContext, ToolRegistry, check_agent_tools
from agentos.tools.web import readable_text

from ..cli_process import run_agentos
from .conftest import WebServer
from .scripted_engine import MODEL, scripted_engine
from .test_tool_calling import tool_call

ARTICLE = b"""<!doctype html>
<html><head><title>Field notes: the kestrel</title></head>
<body>
<nav><a href="/">Home</a> | <a href="/birds">Birds</a> | <a href="/login">Log in</a></nav>
<script>var tracking = "do not show me";</script>
<article>
<h1>The kestrel</h1>
<p>The common kestrel hovers over open fields, facing into the wind, before it drops
onto a vole. It is one of the few birds of prey that can hold still in the air.</p>
<p>Kestrels nest in old crow nests, in holes in trees and on the ledges of buildings,
and a pair raises four to six chicks a year.</p>
</article>
<footer>Copyright 2026 Bird Club. All rights reserved.</footer>
</body></html>
"""


def send(handler: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def searxng(handler: BaseHTTPRequestHandler) -> None:
    """A SearXNG JSON answer: three results about whatever was asked."""
    query = parse_qs(urlsplit(handler.path).query)
    if query.get("format") != ["json"]:
        send(handler, 403, b"Forbidden", "text/html")
        return
    asked = query["q"][0]
    answer = {
        "query": asked,
        "number_of_results": 3,
        "results": [
            {
                "url": f"https://birds.example/{n}",
                "title": f"{asked} {n}",
                "content": f"snippet {n} about {asked}",
                "engine": "duckduckgo",
                "score": 1.0 / n,
            }
            for n in (1, 2, 3)
        ],
        "answers": [],
        "suggestions": [],
    }
    send(handler, 200, json.dumps(answer).encode(), "application/json")


@pytest.fixture
def site(web: WebServer) -> WebServer:
    web.routes["/kestrel"] = lambda h: send(h, 200, ARTICLE, "text/html; charset=utf-8")
    web.routes["/notes.txt"] = lambda h: send(h, 200, b"  plain notes\n", "text/plain")
    web.routes["/photo.png"] = lambda h: send(h, 200, b"\x89PNG....", "image/png")
    web.routes["/search"] = searxng
    return web


def web_config(web: WebServer, *, ttl: str = "1d", **search: Any) -> ToolsConfig:
    return ToolsConfig(
        http=HttpToolConfig(allow_hosts=["127.0.0.1"], max_bytes=100_000, timeout=5),
        web_fetch=WebFetchConfig(ttl=ttl, max_chars=2000),
        web_search=WebSearchConfig(
            **({"searxng_url": web.url, "max_results": 2, "ttl": ttl} | search)
        ),
    )


@pytest.fixture
def run_id(store: Store) -> str:
    return queries.create_run(
        store, agent="tester", kind="prompt", spec={}, wanted=None, agents_file=None
    )


def tool_rows(store: Store) -> list[tuple[Any, ...]]:
    store.flush()
    rows = store.db.execute(
        "SELECT step, tool, arguments, error, cache_hit FROM tool_calls ORDER BY step"
    ).fetchall()
    return [(s, t, json.loads(a), e, c) for s, t, a, e, c in rows]


async def call(
    registry: ToolRegistry, store: Store, run_id: str, tool: str, step: int, **arguments: Any
) -> Any:
    context = ToolContext(config=registry.config, store=store, agent="tester", run_id=run_id)
    return await registry.call(registry.tools[tool], arguments, context=context, step=step)


# -- reading pages ---------------------------------------------------------------------


def test_html_becomes_its_main_text() -> None:
    title, text = readable_text(ARTICLE.decode(), "text/html", "http://x/kestrel")

    assert title == "The kestrel"  # trafilatura prefers the h1 to <title>
    assert "hovers over open fields" in text and "four to six chicks" in text
    for noise in ("Log in", "tracking", "Copyright", "All rights reserved"):
        assert noise not in text


async def test_web_fetch_reads_pages_and_refuses_what_is_not_text(
    site: WebServer, store: Store, run_id: str
) -> None:
    registry = ToolRegistry(web_config(site), store=store)

    page = await call(registry, store, run_id, "web_fetch", 1, url=f"{site.url}/kestrel")
    notes = await call(registry, store, run_id, "web_fetch", 2, url=f"{site.url}/notes.txt")
    photo = await call(registry, store, run_id, "web_fetch", 3, url=f"{site.url}/photo.png")

    assert page.output["title"] == "The kestrel"
    assert "hovers over open fields" in page.output["text"] and not page.output["truncated"]
    assert "Log in" not in page.output["text"]
    assert notes.output["text"] == "plain notes"
    assert (
        photo.error
        == f"'{site.url}/photo.png' is image/png; web_fetch reads HTML and text pages only"
    )


async def test_a_long_page_is_cut_at_max_chars_and_says_so(site: WebServer, store: Store) -> None:
    site.routes["/long.txt"] = lambda h: send(h, 200, b"word " * 1000, "text/plain")
    config = web_config(site).model_copy(update={"web_fetch": WebFetchConfig(max_chars=100)})
    registry = ToolRegistry(config, store=store)
    context = ToolContext(config=config, store=store, agent="tester", run_id=None)

    result = await registry.call(
        registry.tools["web_fetch"], {"url": f"{site.url}/long.txt"}, context=context, step=1
    )

    assert len(result.output["text"]) == 100 and result.output["truncated"] is True


async def test_web_fetch_keeps_to_the_allow_list_and_the_size_limit(
    site: WebServer, store: Store, run_id: str
) -> None:
    config = web_config(site).model_copy(
        update={"http": HttpToolConfig(allow_hosts=["127.0.0.1"], max_bytes=200, timeout=5)}
    )
    registry = ToolRegistry(config, store=store)

    refused = await call(
        registry, store, run_id, "web_fetch", 1, url=f"http://localhost:{site.port}/kestrel"
    )
    again = await call(
        registry, store, run_id, "web_fetch", 2, url=f"http://localhost:{site.port}/kestrel"
    )
    too_big = await call(registry, store, run_id, "web_fetch", 3, url=f"{site.url}/kestrel")

    assert (
        refused.error is not None
        and "host 'localhost' is not allowed; web_fetch may fetch from: 127.0.0.1" in refused.error
    )
    assert again.error == refused.error and not again.cache_hit  # refusals are not cached
    assert too_big.error is not None and "web_fetch reads at most 200" in too_big.error
    assert site.hits == ["/kestrel"]  # only the allowed host was reached


# -- the cache -------------------------------------------------------------------------


async def test_the_second_fetch_of_a_page_is_served_from_the_cache(
    site: WebServer, store: Store, run_id: str
) -> None:
    registry = ToolRegistry(web_config(site), store=store)
    url = f"{site.url}/kestrel"

    first = await call(registry, store, run_id, "web_fetch", 1, url=url)
    # the same page, written differently: the cache key is the normalised URL
    second = await call(
        registry, store, run_id, "web_fetch", 2, url=f"HTTP://127.0.0.1:{site.port}/kestrel#nest"
    )

    assert site.hits == ["/kestrel"]
    assert (first.cache_hit, second.cache_hit) == (False, True)
    assert second.output == first.output
    assert second.cached_at is not None and second.cached_at <= time.time()
    assert [(r[0], r[1], r[4]) for r in tool_rows(store)] == [
        (1, "web_fetch", 0),
        (2, "web_fetch", 1),
    ]
    [(tool, expires, created)] = store.db.execute(
        "SELECT tool, expires_at, created_at FROM tool_cache"
    ).fetchall()
    assert tool == "web_fetch" and expires - created == pytest.approx(86400)


async def test_an_expired_answer_is_fetched_again(
    site: WebServer, store: Store, run_id: str
) -> None:
    registry = ToolRegistry(web_config(site, ttl="1s"), store=store)
    url = f"{site.url}/kestrel"

    await call(registry, store, run_id, "web_fetch", 1, url=url)
    hit = await call(registry, store, run_id, "web_fetch", 2, url=url)
    time.sleep(1.1)
    expired = await call(registry, store, run_id, "web_fetch", 3, url=url)
    hit_again = await call(registry, store, run_id, "web_fetch", 4, url=url)

    assert (hit.cache_hit, expired.cache_hit, hit_again.cache_hit) == (True, False, True)
    assert site.hits == ["/kestrel", "/kestrel"]
    assert store.db.execute("SELECT count(*) FROM tool_cache").fetchone() == (1,)


async def test_a_failed_fetch_is_not_cached(site: WebServer, store: Store, run_id: str) -> None:
    answers = [(503, b"down"), (200, b"back up")]
    site.routes["/flaky"] = lambda h: send(h, *answers.pop(0), "text/plain")
    registry = ToolRegistry(web_config(site), store=store)

    down = await call(registry, store, run_id, "web_fetch", 1, url=f"{site.url}/flaky")
    up = await call(registry, store, run_id, "web_fetch", 2, url=f"{site.url}/flaky")

    assert down.error is not None and "answered 503" in down.error and down.transient
    assert (up.error, up.cache_hit, up.output["text"]) == (None, False, "back up")


# -- web_search ------------------------------------------------------------------------


async def test_web_search_asks_searxng_and_caches_the_results(
    site: WebServer, store: Store, run_id: str
) -> None:
    # the instance need not be in allow_hosts; web_fetch still keeps to it
    config = web_config(site).model_copy(update={"http": HttpToolConfig(allow_hosts=[])})
    registry = ToolRegistry(config, store=store)

    first = await call(registry, store, run_id, "web_search", 1, query="kestrel  nesting")
    second = await call(registry, store, run_id, "web_search", 2, query=" kestrel nesting ")
    other = await call(registry, store, run_id, "web_search", 3, query="vole")
    fetch = await call(registry, store, run_id, "web_fetch", 4, url=f"{site.url}/kestrel")

    assert first.output == {
        "query": "kestrel nesting",
        "results": [
            {
                "title": "kestrel nesting 1",
                "url": "https://birds.example/1",
                "snippet": "snippet 1 about kestrel nesting",
            },
            {
                "title": "kestrel nesting 2",
                "url": "https://birds.example/2",
                "snippet": "snippet 2 about kestrel nesting",
            },
        ],
    }
    assert second.cache_hit and second.output == first.output
    assert not other.cache_hit and other.output["results"][0]["title"] == "vole 1"
    assert fetch.error is not None and "allow_hosts is empty" in fetch.error
    assert site.hits == [
        "/search?q=kestrel+nesting&format=json",
        "/search?q=vole&format=json",
    ]
    assert [r[4] for r in tool_rows(store)] == [0, 1, 0, 0]


async def test_web_search_says_what_is_wrong_with_its_backend(
    site: WebServer, store: Store, run_id: str
) -> None:
    site.routes["/forbidden/search"] = lambda h: send(h, 403, b"Forbidden", "text/html")
    site.routes["/html/search"] = lambda h: send(h, 200, b"<html>hi</html>", "text/html")
    nothing = ToolRegistry(ToolsConfig(), store=store)
    forbidden = ToolRegistry(web_config(site, searxng_url=f"{site.url}/forbidden"), store=store)
    not_json = ToolRegistry(web_config(site, searxng_url=f"{site.url}/html/"), store=store)

    unset = await call(nothing, store, run_id, "web_search", 1, query="kestrel")
    refused = await call(forbidden, store, run_id, "web_search", 2, query="kestrel")
    garbled = await call(not_json, store, run_id, "web_search", 3, query="kestrel")

    assert unset.error is not None and "tools.web_search.searxng_url" in unset.error
    assert refused.error is not None and "answered 403" in refused.error
    assert "search.formats" in refused.error
    assert garbled.error is not None and "did not answer JSON" in garbled.error
    assert site.hits == [
        "/forbidden/search?q=kestrel&format=json",
        "/html/search?q=kestrel&format=json",
    ]
    assert store.db.execute("SELECT count(*) FROM tool_cache").fetchone() == (0,)


@pytest.fixture
def backend_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "my_search.py").write_text(
        "from pathlib import Path\n\n"
        "def search(query: str, max_results: int) -> list[dict]:\n"
        '    """Search my wiki."""\n'
        "    with open(Path(__file__).with_name('asked.txt'), 'a') as log:\n"
        "        log.write(query + '\\n')\n"
        "    return [{'title': f'{query} {n}', 'url': f'https://wiki.example/{n}'}\n"
        "            for n in range(max_results + 3)]\n\n"
        "def broken(query: str, max_results: int) -> str:\n"
        "    return 'not a list'\n"
    )
    monkeypatch.chdir(folder)
    yield folder


async def test_web_search_through_a_user_function(
    backend_folder: Path, store: Store, run_id: str
) -> None:
    config = ToolsConfig(web_search=WebSearchConfig(backend="my_search:search", max_results=2))
    broken = ToolsConfig(web_search=WebSearchConfig(backend="my_search:broken"))
    registry = ToolRegistry(config, store=store)

    first = await call(registry, store, run_id, "web_search", 1, query="kestrel")
    second = await call(registry, store, run_id, "web_search", 2, query="kestrel")
    bad = await call(ToolRegistry(broken, store=store), store, run_id, "web_search", 3, query="x")

    assert first.output == {
        "query": "kestrel",
        "results": [
            {"title": "kestrel 0", "url": "https://wiki.example/0", "snippet": ""},
            {"title": "kestrel 1", "url": "https://wiki.example/1", "snippet": ""},
        ],
    }
    assert second.cache_hit
    assert (backend_folder / "asked.txt").read_text() == "kestrel\n"
    assert bad.error is not None and "should return a list of objects with a 'url'" in bad.error


def test_web_config_mistakes_are_spec_errors(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    for text, words in [
        ("tools:\n  web_search:\n    searxng_url: http://s\n    backend: a:b\n", "not both"),
        ("tools:\n  web_search:\n    searxng_url: file:///etc\n", "searxng_url"),
        ("tools:\n  web_fetch:\n    ttl: soon\n", "not a duration"),
        ("tools:\n  web_fetch:\n    max_chars: 5\n", "max_chars"),
    ]:
        path.write_text(text)
        with pytest.raises(SpecError) as caught:
            load_config(path)
        assert words in caught.value.message and "config.yaml" in caught.value.message


# -- through agents --------------------------------------------------------------------


def test_ask_offers_the_web_tools_that_are_configured(site: WebServer) -> None:
    bare = ask_spec("hi", Config())
    web = ask_spec("hi", Config(tools=web_config(site)))

    assert not {"web_fetch", "web_search", "http_get"} & set(bare.tools)
    assert {"web_fetch", "web_search", "http_get"} <= set(web.tools)


def planner(url: str) -> AgentSpec:
    plan = {
        "steps": [
            {"query": "kestrel", "tool": "web_search"},
            {"url": url, "tool": "web_fetch"},
        ]
    }
    return AgentSpec.model_validate(
        {
            "name": "researcher",
            "kind": "planner",
            "prompt": f"Read up on kestrels at {url}. ANSWER: {json.dumps(plan)}",
            "tools": ["web_search", "web_fetch"],
            "temperature": 0,
            "cache": False,
        }
    )


async def test_a_planner_searches_and_reads_and_its_second_run_is_served_from_the_cache(
    site: WebServer, tmp_path: Path
) -> None:
    db = tmp_path / "web.db"
    url = f"{site.url}/kestrel"
    outcomes: list[PlanOutcome] = []
    shown: list[str] = []
    async with LoopbackEngine() as engine:
        cfg = Config(
            engines=[OpenAIEngineConfig(type="openai", name="loop", base_url=engine.url)],
            tools=web_config(site),
            embeddings=EmbeddingsConfig(enabled=False),
        )
        for _ in range(2):
            out = io.StringIO()
            [outcome] = await run_agents(
                [planner(url)], config=cfg, db_path=db, display=PlainDisplay(out)
            )
            assert isinstance(outcome, PlanOutcome)
            outcomes.append(outcome)
            shown.append(out.getvalue())

    assert [o.status for o in outcomes] == ["succeeded", "succeeded"]
    assert outcomes[0].answer == outcomes[1].answer
    assert "hovers over open fields" in outcomes[1].answer["text"]
    assert site.hits == ["/search?q=kestrel&format=json", "/kestrel"]
    assert [s.cache_hit for o in outcomes for s in o.steps] == [False, False, True, True]
    assert "(from the tool cache)" not in shown[0]
    assert shown[1].count("(from the tool cache)") == 2
    conn = sqlite3.connect(db)
    rows = conn.execute(
        "SELECT run_id, tool, cache_hit, error FROM tool_calls ORDER BY started_at"
    ).fetchall()
    conn.close()
    runs = [o.run_id for o in outcomes]
    assert rows == [
        (runs[0], "web_search", 0, None),
        (runs[0], "web_fetch", 0, None),
        (runs[1], "web_search", 1, None),
        (runs[1], "web_fetch", 1, None),
    ]
    with Store(db) as store:
        [first_result] = queries.run_results(store, runs[0])
        [second_result] = queries.run_results(store, runs[1])
        second = [
            e["payload"] for e in queries.run_events(store, runs[1]) if e["type"] == "tool_call"
        ]
    assert [s.get("cache_hit") for s in first_result["data"]["steps"]] == [None, None]
    assert [s.get("cache_hit") for s in second_result["data"]["steps"]] == [True, True]
    assert [(e["tool"], e.get("cache_hit")) for e in second] == [
        ("web_search", True),
        ("web_fetch", True),
    ]


def test_web_search_without_a_backend_is_a_spec_error_before_anything_runs(
    tmp_path: Path, site: WebServer
) -> None:
    path = tmp_path / "agents.yaml"
    path.write_text(
        "agents:\n  - name: searcher\n    kind: planner\n    prompt: Search for kestrels\n"
        "    tools: [calculator, web_search]\n"
    )

    with pytest.raises(SpecError) as caught:
        check_agent_tools(load_agents(path), config=ToolsConfig())
    check_agent_tools(load_agents(path), config=web_config(site))

    message = caught.value.message
    assert "agents.yaml:5" in message and "agents[0].tools[1]" in message
    assert "agent 'searcher' may call web_search, which has no search backend" in message


async def test_agentos_cache_reports_prunes_and_clears_the_tool_cache(
    site: WebServer, tmp_path: Path
) -> None:
    db = tmp_path / "cache.db"
    with Store(db) as store:
        run = queries.create_run(
            store, agent="tester", kind="prompt", spec={}, wanted=None, agents_file=None
        )
        registry = ToolRegistry(web_config(site), store=store)
        await call(registry, store, run, "web_fetch", 1, url=f"{site.url}/kestrel")
        await call(registry, store, run, "web_search", 2, query="kestrel")
        await call(registry, store, run, "web_search", 3, query="vole")
        store.db.execute("UPDATE tool_cache SET expires_at = 1 WHERE arguments LIKE '%vole%'")
        store.db.conn.commit()

    def agentos(*args: str) -> str:
        done = run_agentos("cache", *args, "--db", str(db), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return done.stdout

    stats = json.loads(agentos("stats", "--json"))
    assert stats["tool_cache"] == {
        "entries": 3,
        "expired": 1,
        "by_tool": {"web_fetch": 1, "web_search": 2},
    }
    assert "tool cache: 3 answers, 1 expired" in agentos("stats")
    assert "removed 1 tool cache answers" in agentos("prune")
    assert "removed 2 tool cache answers" in agentos("clear")


async def test_a_prompt_agent_reads_a_page_to_summarise_it(site: WebServer, tmp_path: Path) -> None:
    url = f"{site.url}/kestrel"
    turn: list[dict[str, Any] | int] = [
        {"content": None, "tool_calls": [tool_call("web_fetch", {"url": url})]},
        {"content": '{"summary": "Kestrels hover over fields and hunt voles."}'},
    ]
    spec = AgentSpec.model_validate(
        {
            "name": "summariser",
            "prompt": f"Summarise {url} in one sentence.",
            "tools": ["web_fetch"],
            "response_format": {"summary": "text"},
            "life_cycle": {"max_attempts": 1},
            "cache": False,
        }
    )
    db = tmp_path / "summary.db"
    with scripted_engine(turn + turn) as engine:
        cfg = Config(
            engines=[
                OpenAIEngineConfig(type="openai", name="e", base_url=engine.url, models=[MODEL])
            ],
            tools=web_config(site),
            embeddings=EmbeddingsConfig(enabled=False),
        )
        for _ in range(2):
            [outcome] = await run_agents(
                [spec], config=cfg, db_path=db, display=PlainDisplay(io.StringIO())
            )
            assert outcome.status == "succeeded", outcome.error

    told = [r["messages"][-1] for r in engine.requests[1::2]]
    assert [m["role"] for m in told] == ["tool", "tool"]
    assert all("hovers over open fields" in m["content"] for m in told)
    assert site.hits == ["/kestrel"]
    conn = sqlite3.connect(db)
    hits = conn.execute("SELECT cache_hit FROM tool_calls ORDER BY started_at").fetchall()
    conn.close()
    assert hits == [(0,), (1,)]
