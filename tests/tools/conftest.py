"""Fixtures for the tool tests: a real database, a workspace, a tiny loopback web server."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agentos.spec.config import HttpToolConfig, ToolsConfig
from agentos.store import Store
from agentos.tools.registry import ToolContext, ToolRegistry

Route = Callable[[BaseHTTPRequestHandler], None]


@dataclass
class WebServer:
    """A threaded HTTP server on 127.0.0.1; ``routes`` maps a path to its handler."""

    routes: dict[str, Route]
    hits: list[str] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def web() -> Iterator[WebServer]:
    server_state = WebServer(routes={})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server_state.hits.append(self.path)
            route = server_state.routes.get(self.path.split("?", 1)[0])
            if route is None:
                self.send_error(404)
                return
            route(self)

        def log_message(self, format: str, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        block_on_close = False

        def handle_error(self, request: object, client_address: object) -> None:
            pass  # a client that hung up on purpose (size and time limits) is no error

    httpd = Server(("127.0.0.1", 0), Handler)
    server_state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield server_state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "tools.db") as opened:
        yield opened


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    folder = tmp_path / "workspace"
    folder.mkdir()
    return folder


@pytest.fixture
def tools_config(workspace: Path) -> ToolsConfig:
    return ToolsConfig(
        workspace=str(workspace),
        file_max_bytes=64,
        http=HttpToolConfig(allow_hosts=["127.0.0.1"], max_bytes=1000, timeout=5),
    )


@pytest.fixture
def registry(tools_config: ToolsConfig, store: Store) -> ToolRegistry:
    return ToolRegistry(tools_config, store=store)


@pytest.fixture
def context(tools_config: ToolsConfig, store: Store) -> ToolContext:
    return ToolContext(config=tools_config, store=store, agent="tester", run_id=None)
