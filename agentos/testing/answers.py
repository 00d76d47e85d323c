"""Deterministic answers for the loopback test engine (``agentos.testing.engine``).

Everything here is a pure function of the request: the same body always gives the same
answer, byte for byte, so tests can compare runs, the cache can be checked, and replay can
be exercised against an engine that behaves like a perfectly reproducible model.

Invariants the router and its tests rely on:

- A prompt's answer depends on the model, the prompt (or the messages) and the sampling
  parameters (temperature, ``seed``, ``max_tokens``, ``response_format``, …), never on the
  other prompts in the same request, its position in a prompt list, or ``n``. A job
  therefore gets the same answer whether the router batched it or sent it alone.
- Answer content is chosen in this order: the rest of the line after the last ``ANSWER:``
  marker in the last user message (or the prompt), up to the end of the line or a
  ``<|im_end|>``, so a test can script an exact answer even when the request carries a
  schema or agentos appends format instructions; else a JSON document valid against the
  request's JSON Schema; else ``{"answer": …}`` for a bare ``json_object`` request; else a
  short sentence.
- A completions prompt that is a whole conversation rendered with ``CHATML_TEMPLATE``
  (what a router makes of a chat job to batch it) is answered as that conversation sent
  to the chat endpoint would be: the same marker source (the last user message) and the
  same answer, given the same sampling parameters. ``stop`` is not one of them: like an
  engine's, it only cuts the answer, which never contains a ``stop`` string.
- Copies of one prompt in a list, in a request without ``seed`` at a temperature above 0
  (or none), are sampled apart, as an engine samples every prompt of an unseeded request
  on its own: the k-th copy gets what choice k of ``n`` would, so the first copy gets
  the prompt's usual answer. With a ``seed``, or at temperature 0, copies are answered
  alike.
- Token counts are whitespace-separated words, which is all a test needs to check that
  usage is summed correctly.
- Embeddings are unit vectors derived from a hash of model and text, so equal texts have
  cosine similarity 1 and different texts are (almost surely) different.

Schema support covers what agents use in practice (pydantic's ``model_json_schema()``
output included): ``type`` (also as a list), ``properties``/``required``, ``items`` and
``prefixItems``, ``minItems``/``maxItems``/``uniqueItems``, ``enum`` (first value),
``const``, ``anyOf``/``oneOf`` (first non-null branch), ``allOf`` (merged), local ``$ref``,
numeric bounds, string lengths and common formats. ``pattern`` is not honoured.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
EMBEDDINGS_PATH = "/v1/embeddings"

ANSWER_MARKER = "ANSWER:"

CHATML_EOS = "<|im_end|>"
"""The end-of-turn token of ChatML, the chat template the test engine's models use."""
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""ChatML as Hugging Face ``tokenizer_config.json`` files write it (Qwen, SmolLM2, Hermes):
what ``GET /props`` reports as the model's chat template."""

_CHATML_TURN = re.compile(r"<\|im_start\|>([a-z_]+)\n(.*?)<\|im_end\|>\n", re.DOTALL)
_CHATML_ASSISTANT = "<|im_start|>assistant\n"

_NOT_SAMPLING = frozenset({"model", "messages", "prompt", "input", "n", "stream", "user", "stop"})
_SCHEMA_DEPTH = 6
_WORDS = (
    "amber", "beacon", "cedar", "delta", "ember", "falcon", "garnet", "harbor", "indigo",
    "juniper", "kestrel", "lantern", "meadow", "nectar", "orbit", "pebble", "quartz",
    "river", "saffron", "timber", "umber", "velvet", "willow", "xenon", "yonder", "zephyr",
    "anchor", "bramble", "cobalt", "dune", "echo", "fern", "glacier", "hazel", "island",
    "jasper", "kernel", "lumen", "maple", "north", "onyx", "prairie", "quill", "ridge",
    "summit", "tide", "unity", "vista", "wander", "yarrow",
)  # fmt: skip


class InvalidRequest(Exception):
    """A request the engine refuses with an OpenAI-shaped error answer.

    Internal to the test engine: it never leaves the server, it becomes an HTTP answer.
    """

    def __init__(self, status: int, message: str, *, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


@dataclass
class InferenceRequest:
    """A validated request to one of the three inference endpoints."""

    path: str
    model: str
    body: dict[str, Any]
    prompts: list[str]
    """Completions: the prompts; chat: the rendered conversation (one); embeddings: inputs."""
    marker_sources: list[str]
    """Per prompt, the text searched for ``ANSWER:`` (chat: the last user message)."""
    answer_keys: list[object]
    """Per prompt, what its answer is derived from besides the model and the parameters:
    the messages of a chat (or of a ChatML-rendered completions prompt), else the prompt."""

    @property
    def n_prompts(self) -> int:
        return len(self.prompts)


def error_body(message: str, *, code: str, kind: str = "invalid_request_error") -> bytes:
    """An error in the shape OpenAI-compatible servers answer with."""
    error = {"message": message, "type": kind, "param": None, "code": code}
    return json.dumps({"error": error}).encode()


def parse_request(
    path: str, body: object, *, models: Sequence[str], max_batch: int
) -> InferenceRequest:
    """Validate ``body`` for ``path``; raises ``InvalidRequest`` with the answer to send."""
    if not isinstance(body, dict):
        raise InvalidRequest(400, "the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str):
        raise InvalidRequest(400, "'model' is required and must be a string")
    if model not in models:
        raise InvalidRequest(404, f"the model '{model}' does not exist", code="model_not_found")
    if body.get("stream"):
        raise InvalidRequest(400, "streaming is not supported by the loopback test engine")
    n = body.get("n", 1)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise InvalidRequest(400, "'n' must be a positive integer")
    if path == CHAT_PATH:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise InvalidRequest(400, "'messages' must be a non-empty list")
        if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
            raise InvalidRequest(400, "every message needs a 'role'")
        texts = [_message_text(m) for m in messages]
        last_user = [t for m, t in zip(messages, texts, strict=True) if m["role"] == "user"]
        return InferenceRequest(
            path,
            model,
            body,
            ["\n".join(texts)],
            [last_user[-1] if last_user else ""],
            [messages],
        )
    field_name = "prompt" if path == COMPLETIONS_PATH else "input"
    prompts = _string_list(body.get(field_name), field_name)
    if path == COMPLETIONS_PATH and len(prompts) > max_batch:
        raise InvalidRequest(
            400,
            f"{len(prompts)} prompts in one request; this engine takes at most {max_batch}",
            code="batch_too_large",
        )
    if path == EMBEDDINGS_PATH:
        return InferenceRequest(path, model, body, prompts, prompts, list(prompts))
    sources: list[str] = []
    keys: list[object] = []
    for prompt in prompts:
        conversation = chatml_messages(prompt)
        if conversation is None:
            sources.append(prompt)
            keys.append(prompt)
        else:
            users = [m["content"] for m in conversation if m["role"] == "user"]
            sources.append(users[-1] if users else "")
            keys.append(conversation)
    return InferenceRequest(path, model, body, prompts, sources, keys)


def chatml_messages(prompt: str) -> list[dict[str, str]] | None:
    """The conversation a completions prompt renders with ``CHATML_TEMPLATE`` (turns, then
    the assistant's generation prompt), or None when the prompt is not one."""
    if not prompt.startswith("<|im_start|>") or not prompt.endswith(_CHATML_ASSISTANT):
        return None
    messages: list[dict[str, str]] = []
    at = 0
    while (turn := _CHATML_TURN.match(prompt, at)) is not None:
        messages.append({"role": turn[1], "content": turn[2]})
        at = turn.end()
    if not messages or prompt[at:] != _CHATML_ASSISTANT:
        return None
    return messages


def build_response(
    request: InferenceRequest, *, embedding_dim: int, broken_json: bool = False
) -> dict[str, Any]:
    """The full OpenAI-shaped answer; ``broken_json`` garbles each answer's content the way
    a small model does (fence, prose, trailing comma) while the envelope stays valid."""
    if request.path == EMBEDDINGS_PATH:
        return _embeddings_response(request, embedding_dim)
    params = {k: v for k, v in request.body.items() if k not in _NOT_SAMPLING}
    schema, json_mode = _requested_schema(request.body)
    max_tokens = request.body.get("max_tokens")
    n: int = request.body.get("n", 1)
    stops = _stop_strings(request.body.get("stop"))
    choices: list[dict[str, Any]] = []
    chat = request.path == CHAT_PATH
    keys: list[bytes] = []
    copies: dict[str, int] | None = {} if _samples_copies_apart(request.body) else None
    for text, prompt, source in zip(
        request.prompts, request.answer_keys, request.marker_sources, strict=True
    ):
        first = 0
        if copies is not None:  # the k-th copy of a prompt is sampled like choice k would be
            first = copies.get(text, 0)
            copies[text] = first + n
        for i in range(first, first + n):
            key = _digest([request.model, prompt, params, i])
            keys.append(key)
            content, finish = answer_content(key, source, schema, json_mode, max_tokens)
            if broken_json:
                content = break_json(content)
            if stops:
                content, finish = cut_at_stop(content, stops, finish)
            index = len(choices)
            if chat:
                message = {"role": "assistant", "content": content}
                choices.append({"index": index, "message": message, "finish_reason": finish})
            else:
                choice = {"index": index, "text": content, "finish_reason": finish}
                choices.append({**choice, "logprobs": None})
    outputs = [c["message"]["content"] if chat else c["text"] for c in choices]
    return {
        "id": ("chatcmpl-" if chat else "cmpl-") + hashlib.sha256(b"".join(keys)).hexdigest()[:24],
        "object": "chat.completion" if chat else "text_completion",
        "created": 0,
        "model": request.model,
        "choices": choices,
        "usage": _usage(request.prompts, outputs),
    }


def _samples_copies_apart(body: Mapping[str, Any]) -> bool:
    """Whether copies of one prompt in a request get different answers: sampled (a
    temperature above 0, or none given: engines default to 1) and no ``seed``, as an
    engine samples each prompt of an unseeded request on its own."""
    if "seed" in body or not isinstance(body.get("prompt"), list):
        return False
    temperature = body.get("temperature", 1.0)
    return not isinstance(temperature, int | float) or temperature > 0


def answer_content(
    key: bytes,
    marker_source: str,
    schema: object | None,
    json_mode: bool,
    max_tokens: object = None,
) -> tuple[str, str]:
    """The answer text and its finish reason (``length`` when ``max_tokens`` cut it)."""
    at = marker_source.rfind(ANSWER_MARKER)
    if at >= 0:
        rest = marker_source[at + len(ANSWER_MARKER) :]
        return rest.split("\n", 1)[0].split(CHATML_EOS, 1)[0].strip(), "stop"
    rng = random.Random(key)
    if schema is not None:
        return json.dumps(SchemaInstance(schema, rng).value(schema, 0)), "stop"
    sentence = _sentence(rng)
    if json_mode:
        return json.dumps({"answer": sentence}), "stop"
    words = sentence.split()
    if isinstance(max_tokens, int) and 0 < max_tokens < len(words):
        return " ".join(words[:max_tokens]), "length"
    return sentence, "stop"


def cut_at_stop(content: str, stops: Sequence[str], finish: str) -> tuple[str, str]:
    """``content`` up to the first occurrence of any ``stop`` string, as engines end
    generation there (finish reason ``stop`` when it was cut)."""
    cut = min((i for i in (content.find(s) for s in stops) if i >= 0), default=-1)
    return (content[:cut], "stop") if cut >= 0 else (content, finish)


def break_json(content: str) -> str:
    """``content`` as a small model would write it: prose around a ```json fence holding
    the document pretty-printed with a trailing comma (non-JSON content is wrapped first)."""
    try:
        document = json.loads(content)
    except ValueError:
        document = {"answer": content}
    text = json.dumps(document, indent=2)
    if isinstance(document, dict | list) and document:
        text = text[:-2] + ",\n" + text[-1]
    return f"Sure! Here is the JSON you asked for:\n```json\n{text}\n```\nHope this helps."


def embedding_vector(model: str, text: str, dim: int) -> list[float]:
    """A unit vector of ``dim`` floats derived from a hash of ``model`` and ``text``."""
    rng = random.Random(_digest([model, text]))
    vector = [rng.gauss(0.0, 1.0) for _ in range(dim)]
    norm = sum(x * x for x in vector) ** 0.5 or 1.0
    return [x / norm for x in vector]


class SchemaInstance:
    """Builds one JSON value valid against a JSON Schema, drawing choices from ``rng``.

    Past ``_SCHEMA_DEPTH`` nested levels only required properties and ``minItems`` items
    are produced, so recursive schemas (trees through ``$ref``) terminate.
    """

    def __init__(self, root: object, rng: random.Random) -> None:
        self.root = root
        self.rng = rng

    def value(self, schema: object, depth: int) -> Any:
        if not isinstance(schema, dict) or not schema:
            return self._string({})
        if "$ref" in schema:
            target = self._resolve(schema["$ref"])
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            return self.value({**target, **rest} if rest else target, depth + 1)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return schema["enum"][0]
        for key in ("anyOf", "oneOf"):
            if isinstance(schema.get(key), list) and schema[key]:
                options = [o for o in schema[key] if not _is_null_schema(o)] or schema[key]
                return self.value(options[0], depth)
        if isinstance(schema.get("allOf"), list):
            return self.value(self._merge_all_of(schema), depth)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((t for t in kind if t != "null"), "null")
        if kind is None:
            kind = "object" if "properties" in schema else "array" if "items" in schema else ""
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, depth)
        if kind == "integer":
            return self._integer(schema)
        if kind == "number":
            return self._number(schema)
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "null":
            return None
        return self._string(schema)

    def _resolve(self, ref: object) -> dict[str, Any]:
        if not isinstance(ref, str) or not ref.startswith("#"):
            return {}
        node: Any = self.root
        for part in ref.lstrip("#").strip("/").split("/"):
            if not part:
                continue
            part = part.replace("~1", "/").replace("~0", "~")
            node = node.get(part, {}) if isinstance(node, dict) else {}
        return node if isinstance(node, dict) else {}

    def _merge_all_of(self, schema: dict[str, Any]) -> dict[str, Any]:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            part = (
                self._resolve(part["$ref"]) if isinstance(part, dict) and "$ref" in part else part
            )
            if not isinstance(part, dict):
                continue
            properties = {**merged.get("properties", {}), **part.get("properties", {})}
            required = [*merged.get("required", []), *part.get("required", [])]
            merged = {**merged, **part, "properties": properties, "required": required}
        return merged

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        properties: dict[str, Any] = schema.get("properties") or {}
        required = [r for r in schema.get("required", []) if isinstance(r, str)]
        names = list(dict.fromkeys([*properties, *required])) if depth < _SCHEMA_DEPTH else required
        extra = schema.get("additionalProperties")
        result: dict[str, Any] = {}
        for name in names:
            sub = properties.get(name, extra if isinstance(extra, dict) else {})
            result[name] = self.value(sub, depth + 1)
        while len(result) < schema.get("minProperties", 0) and extra is not False:
            result[f"extra_{len(result)}"] = self.value(extra, depth + 1)
        return result

    def _array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        low = max(0, int(schema.get("minItems", 0)))
        high = int(schema.get("maxItems", max(3, low)))
        count = low if depth >= _SCHEMA_DEPTH else min(max(self.rng.randint(1, 3), low), high)
        prefix = schema.get("prefixItems") or []
        items = schema.get("items", {})
        result = [self.value(p, depth + 1) for p in prefix[:count]]
        if schema.get("uniqueItems") and isinstance(items, dict) and items.get("enum"):
            return result + list(items["enum"])[: max(0, count - len(result))]
        seen = {json.dumps(v, sort_keys=True) for v in result}
        attempts = 0
        while len(result) < count and attempts < 10 * count and items is not False:
            attempts += 1
            item = self.value(items, depth + 1)
            text = json.dumps(item, sort_keys=True)
            if schema.get("uniqueItems") and text in seen:
                continue
            seen.add(text)
            result.append(item)
        return result

    def _integer(self, schema: dict[str, Any]) -> int:
        low, high = _bounds(schema, 0, 100, step=1)
        low, high = math.ceil(low), math.floor(high)
        value = self.rng.randint(low, high) if low <= high else low
        multiple = schema.get("multipleOf")
        if isinstance(multiple, int) and multiple > 0:
            value = math.ceil(value / multiple) * multiple
            if value > high:
                value -= multiple
        return value

    def _number(self, schema: dict[str, Any]) -> float:
        low, high = _bounds(schema, 0.0, 100.0, step=1e-6)
        return round(self.rng.uniform(low, high), 6) if low < high else float(low)

    def _string(self, schema: dict[str, Any]) -> str:
        fmt = schema.get("format")
        tag = f"{self.rng.getrandbits(16):04x}"
        text = {
            "date-time": "2024-01-01T00:00:00Z",
            "date": "2024-01-01",
            "time": "00:00:00Z",
            "email": f"user-{tag}@example.com",
            "uri": f"https://example.com/{tag}",
            "uuid": "00000000-0000-4000-8000-00000000" + tag,
        }.get(fmt if isinstance(fmt, str) else "", f"{self.rng.choice(_WORDS)}-{tag}")
        min_length = int(schema.get("minLength", 0))
        if len(text) < min_length:
            text += "x" * (min_length - len(text))
        max_length = schema.get("maxLength")
        return text[: int(max_length)] if isinstance(max_length, int) else text


def _bounds(schema: Mapping[str, Any], low: float, high: float, step: float) -> tuple[float, float]:
    """The inclusive range allowed by ``minimum``/``maximum`` and their exclusive forms,
    defaulting to [low, high] narrowed to stay inside whatever bound is given."""
    lo = schema.get("minimum", schema.get("exclusiveMinimum"))
    if "exclusiveMinimum" in schema and "minimum" not in schema:
        lo = schema["exclusiveMinimum"] + step
    hi = schema.get("maximum", schema.get("exclusiveMaximum"))
    if "exclusiveMaximum" in schema and "maximum" not in schema:
        hi = schema["exclusiveMaximum"] - step
    if lo is None and hi is None:
        return low, high
    if lo is None:
        return (low if low <= hi else hi - (high - low)), hi
    if hi is None:
        return lo, (high if high >= lo else lo + (high - low))
    return lo, hi


def _requested_schema(body: Mapping[str, Any]) -> tuple[object | None, bool]:
    """The JSON Schema a request asks its answer to follow, and whether JSON was asked for.

    Reads OpenAI's ``response_format`` (``json_schema`` and ``json_object`` with a
    ``schema``), llama.cpp's top-level ``json_schema`` and vLLM's ``guided_json``.
    """
    response_format = body.get("response_format")
    if isinstance(response_format, dict):
        kind = response_format.get("type")
        if kind == "json_schema":
            wrapper = response_format.get("json_schema")
            schema = wrapper.get("schema") if isinstance(wrapper, dict) else None
            return (schema if schema is not None else {"type": "object"}), True
        if kind == "json_object":
            return response_format.get("schema"), True
    for key in ("json_schema", "guided_json"):
        if isinstance(body.get(key), dict):
            return body[key], True
    return None, False


def _embeddings_response(request: InferenceRequest, embedding_dim: int) -> dict[str, Any]:
    dim = request.body.get("dimensions", embedding_dim)
    if not isinstance(dim, int) or dim < 1:
        dim = embedding_dim
    as_base64 = request.body.get("encoding_format") == "base64"
    data = []
    for index, text in enumerate(request.prompts):
        vector = embedding_vector(request.model, text, dim)
        encoded: object = vector
        if as_base64:
            encoded = base64.b64encode(struct.pack(f"<{dim}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    usage = _usage(request.prompts, [])
    return {"object": "list", "data": data, "model": request.model, "usage": usage}


def _usage(prompts: Sequence[str], outputs: Sequence[str]) -> dict[str, int]:
    prompt_tokens = sum(len(p.split()) for p in prompts)
    completion_tokens = sum(len(o.split()) for o in outputs)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(5, 12))]
    return " ".join(words).capitalize() + "."


def _message_text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict)]
        return "\n".join(p for p in parts if isinstance(p, str))
    return ""


def _stop_strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list):
        return [s for s in value if isinstance(s, str) and s]
    return []


def _string_list(value: object, name: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise InvalidRequest(400, f"'{name}' must be a string or a non-empty list of strings")


def _is_null_schema(schema: object) -> bool:
    return isinstance(schema, dict) and schema.get("type") == "null"


def _digest(parts: object) -> bytes:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).digest()
