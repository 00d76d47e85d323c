"""http_get: allowed hosts only, bounded size and time, redirects checked too."""

from __future__ import annotations

import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from agentos.errors import SpecError
from agentos.spec.config import HttpToolConfig, load_config
from agentos.tools.http import host_allowed, http_get
from agentos.tools.registry import ToolContext, ToolError, ToolRegistry

from .conftest import WebServer


def send(handler: BaseHTTPRequestHandler, status: int, body: bytes, **headers: str) -> None:
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name.replace("_", "-"), value)
    if "Content_Length" not in headers:
        handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def allowed(*hosts: str, max_bytes: int = 1000, timeout: float = 5) -> HttpToolConfig:
    return HttpToolConfig(allow_hosts=list(hosts), max_bytes=max_bytes, timeout=timeout)


async def test_fetches_from_an_allowed_host(web: WebServer) -> None:
    web.routes["/hello"] = lambda h: send(
        h, 200, b'{"greeting": "hi"}', Content_Type="application/json"
    )

    answer = await http_get(f"{web.url}/hello", allowed("127.0.0.1"))

    assert answer == {
        "url": f"{web.url}/hello",
        "status": 200,
        "content_type": "application/json",
        "text": '{"greeting": "hi"}',
    }


async def test_refuses_a_host_not_allowed_without_connecting(web: WebServer) -> None:
    web.routes["/hello"] = lambda h: send(h, 200, b"hi")

    with pytest.raises(ToolError, match="host 'localhost' is not allowed"):
        await http_get(f"http://localhost:{web.port}/hello", allowed("127.0.0.1"))
    with pytest.raises(ToolError, match=r"allow_hosts is empty"):
        await http_get(f"{web.url}/hello", allowed())
    with pytest.raises(ToolError, match="not an http"):
        await http_get("file:///etc/passwd", allowed("127.0.0.1"))
    assert web.hits == []


async def test_refuses_a_redirect_to_a_host_not_allowed(web: WebServer) -> None:
    web.routes["/away"] = lambda h: send(h, 302, b"", Location="http://evil.example/steal")
    web.routes["/inside"] = lambda h: send(h, 301, b"", Location="/hello")
    web.routes["/hello"] = lambda h: send(h, 200, b"hi")

    with pytest.raises(ToolError, match=r"host 'evil\.example' is not allowed"):
        await http_get(f"{web.url}/away", allowed("127.0.0.1"))
    followed = await http_get(f"{web.url}/inside", allowed("127.0.0.1"))

    assert followed["url"] == f"{web.url}/hello" and followed["text"] == "hi"


async def test_refuses_an_oversized_answer(web: WebServer) -> None:
    web.routes["/declared"] = lambda h: send(h, 200, b"x" * 5000)

    def undeclared(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Connection", "close")
        handler.end_headers()
        for _ in range(50):
            handler.wfile.write(b"y" * 100)

    web.routes["/undeclared"] = undeclared

    with pytest.raises(ToolError, match="5000 bytes; http_get reads at most 1000"):
        await http_get(f"{web.url}/declared", allowed("127.0.0.1"))
    with pytest.raises(ToolError, match="larger than 1000 bytes"):
        await http_get(f"{web.url}/undeclared", allowed("127.0.0.1"))


async def test_a_slow_host_times_out_as_a_transient_error(web: WebServer) -> None:
    def slow(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(1.0)
        send(handler, 200, b"late")

    web.routes["/slow"] = slow

    with pytest.raises(ToolError) as caught:
        await http_get(f"{web.url}/slow", allowed("127.0.0.1", timeout=0.2))
    assert "did not answer within 0.2s" in caught.value.message
    assert caught.value.transient


async def test_error_statuses(web: WebServer) -> None:
    web.routes["/missing-page"] = lambda h: send(h, 404, b"nope")
    web.routes["/broken"] = lambda h: send(h, 503, b"down")

    with pytest.raises(ToolError) as not_found:
        await http_get(f"{web.url}/missing-page", allowed("127.0.0.1"))
    with pytest.raises(ToolError) as unavailable:
        await http_get(f"{web.url}/broken", allowed("127.0.0.1"))

    assert "answered 404" in not_found.value.message and not not_found.value.transient
    assert "answered 503" in unavailable.value.message and unavailable.value.transient


def test_host_patterns() -> None:
    hosts = ["api.example.com", "*.example.org", "[::1]"]
    assert host_allowed("API.example.com", hosts)
    assert host_allowed("a.b.example.org", hosts)
    assert host_allowed("::1", hosts)
    assert not host_allowed("example.org", hosts)
    assert not host_allowed("evilexample.org", hosts)
    assert not host_allowed("api.example.com.evil.net", hosts)


async def test_through_the_registry(
    registry: ToolRegistry, context: ToolContext, web: WebServer
) -> None:
    web.routes["/hello"] = lambda h: send(h, 200, b"hi")
    tool = registry.tools["http_get"]

    good = await registry.call(tool, {"url": f"{web.url}/hello"}, context=context, step=1)
    bad = await registry.call(tool, {"url": "http://example.com/"}, context=context, step=2)

    assert good.output["text"] == "hi"
    assert bad.error_class == "ToolError" and "not allowed" in (bad.error or "")


def test_host_patterns_may_name_a_port() -> None:
    hosts = ["api.example.com:8443", "*.example.org:80", "[::1]:9000", "127.0.0.1"]
    assert host_allowed("api.example.com", hosts, port=8443)
    assert not host_allowed("api.example.com", hosts, port=443)
    assert host_allowed("a.example.org", hosts, port=80)
    assert not host_allowed("a.example.org", hosts, port=8080)
    assert host_allowed("::1", hosts, port=9000)
    assert not host_allowed("::1", hosts, port=22)
    assert host_allowed("127.0.0.1", hosts, port=5432)  # no port named: any port


async def test_a_port_in_allow_hosts_is_the_only_port_reached(web: WebServer) -> None:
    web.routes["/hello"] = lambda h: send(h, 200, b"hi")
    config = allowed(f"127.0.0.1:{web.port}")

    answer = await http_get(f"{web.url}/hello", config)
    with pytest.raises(ToolError, match=rf"port {web.port + 1} of host '127.0.0.1' is not allowed"):
        await http_get(f"http://127.0.0.1:{web.port + 1}/hello", config)
    with pytest.raises(ToolError, match=r"port 80 of host '127.0.0.1' is not allowed"):
        await http_get("http://127.0.0.1/hello", config)

    assert answer["text"] == "hi"
    assert web.hits == ["/hello"]


async def test_a_bad_port_is_refused_with_its_reason(web: WebServer) -> None:
    with pytest.raises(ToolError, match="port"):
        await http_get("http://127.0.0.1:99999/", allowed("127.0.0.1"))
    assert web.hits == []


@pytest.mark.parametrize("entry", ["api.example.com:99999", "api.example.com:http", "a:b:c:"])
def test_a_bad_allow_hosts_entry_is_a_spec_error(tmp_path: Path, entry: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"tools:\n  http:\n    allow_hosts: ['{entry}']\n")

    with pytest.raises(SpecError) as caught:
        load_config(path)

    assert entry in caught.value.message and "allow_hosts" in caught.value.message
