"""Configured secrets, kept out of everything agentos stores or prints.

agentos never writes its keys itself (they live only in the ``Authorization`` header of
an engine's HTTP session), but an engine can echo them: a 401 body that says ``invalid
key Bearer sk-…``, an answer that quotes the request's headers. Whatever an engine sends
passes through :func:`redact_bytes` before it is parsed (``EngineClient``), and every
error message the client makes through :func:`redact`, so a secret never reaches
``llm_calls``, the events, the cache, a log line or the terminal.

Secrets are registered once, where they are configured (:func:`register`, called by
``EngineClient`` for its API key and credential headers, and by :func:`register_config`
for every ``SecretStr`` of ``config.yaml``). A secret shorter than :data:`MIN_LENGTH`
characters is not registered: replacing every ``"abc"`` in every answer would garble
answers and hide nothing worth hiding.

The registry is process-wide on purpose: errors are made and printed in many places,
and a key configured for one engine must not leak through another engine's echo either.
"""

from __future__ import annotations

import json
from typing import Any

MASK = "<redacted>"
"""What a secret is replaced with: plain ASCII, so it is valid inside a JSON string, and
no ``[...]``, which rich (the CLI's tables and panels) would take for markup and drop."""

MIN_LENGTH = 4
"""Shortest secret that is redacted."""

_texts: dict[str, None] = {}
"""Registered secrets and their JSON-escaped spellings (ordered, longest first)."""
_raw: list[tuple[bytes, bytes]] = []
"""The same as UTF-8 needles, each with its replacement."""

_CREDENTIAL_HEADER_WORDS = ("authorization", "key", "token", "secret", "cookie", "password")


def register(secret: str | None) -> None:
    """Redact ``secret`` (and its JSON-escaped spelling) from now on."""
    if not secret or len(secret) < MIN_LENGTH:
        return
    spellings = {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    added = False
    for spelling in spellings:
        if spelling not in _texts:
            _texts[spelling] = None
            added = True
    if added:
        ordered = sorted(_texts, key=len, reverse=True)
        _texts.clear()
        _texts.update(dict.fromkeys(ordered))
        _raw[:] = [(text.encode("utf-8", "surrogatepass"), MASK.encode()) for text in ordered]


def register_headers(headers: dict[str, str]) -> None:
    """Register the values of headers whose names say they carry credentials."""
    for name, value in headers.items():
        lowered = name.lower()
        if any(word in lowered for word in _CREDENTIAL_HEADER_WORDS):
            register(value)
            if lowered == "authorization" and " " in value:
                register(value.split(" ", 1)[1])  # the token without its scheme


def register_config(model: Any) -> None:
    """Register every ``SecretStr`` value found in a pydantic model (``config.yaml``)."""
    from pydantic import BaseModel, SecretStr

    stack = [model]
    while stack:
        value = stack.pop()
        if isinstance(value, SecretStr):
            register(value.get_secret_value())
        elif isinstance(value, BaseModel):
            stack.extend(getattr(value, name) for name in type(value).model_fields)
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by :data:`MASK`."""
    for secret in _texts:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_bytes(raw: bytes) -> bytes:
    """``raw`` (an engine's answer as received) with every registered secret replaced.

    On the path of every answer: one substring search per secret, no decoding."""
    for needle, mask in _raw:
        if needle in raw:
            raw = raw.replace(needle, mask)
    return raw


def forget_all() -> None:
    """Drop every registered secret (tests)."""
    _texts.clear()
    _raw.clear()
