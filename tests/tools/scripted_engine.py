"""An OpenAI-compatible chat server on 127.0.0.1 that answers from a script, in order.

The loopback test engine answers from the request alone, and never with ``tool_calls``;
native tool calling needs an engine that does, and a conversation of several turns needs
answers that follow one another. Each scripted item is an assistant message (a dict, sent
as the choice's ``message``) or an HTTP status to fail with. The one-token capability
probes agentos sends at start-up are answered without using the script. Every other
request body is kept in ``requests``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "scripted"


class ScriptedEngine:
    def __init__(self, script: list[dict[str, Any] | int]) -> None:
        self.script = list(script)
        self.requests: list[dict[str, Any]] = []
        self.port = 0
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def next_reply(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if body.get("max_tokens") == 1:
            return 200, _completion({"role": "assistant", "content": "ok"})
        with self._lock:
            self.requests.append(body)
            if not self.script:
                return 500, {"error": {"message": "the script has no more answers"}}
            item = self.script.pop(0)
        if isinstance(item, int):
            return item, {"error": {"message": f"scripted failure {item}: tools not supported"}}
        return 200, _completion({"role": "assistant", **item})


def _completion(message: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": 0,
        "model": MODEL,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


@contextmanager
def scripted_engine(script: list[dict[str, Any] | int]) -> Iterator[ScriptedEngine]:
    engine = ScriptedEngine(script)

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
            else:
                self._send(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            if self.path != "/v1/chat/completions":
                self._send(404, {"error": {"message": "chat only"}})
                return
            self._send(*engine.next_reply(body))

        def log_message(self, format: str, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        block_on_close = False

    httpd = Server(("127.0.0.1", 0), Handler)
    engine.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield engine
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
