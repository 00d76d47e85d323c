"""The response cache: every answered request, keyed by what was asked, in the store.

The key is the sha256 of the request's canonical JSON (:func:`canonical_request`): the
model, the kind, the messages / prompt / input, the sampling parameters and the response
format. Invariants of the key:

- It does not depend on the order of keys in any dict, at any depth, nor on whether a
  number is written ``1`` or ``1.0`` (JSON does not tell them apart either).
- It does not include ``seed`` or ``stream``: the seed an engine receives is derived from
  the sample index (below), and streaming changes how an answer arrives, not what it is.
- It includes what an engine changes in the body it sends for the request, its *shape*
  (``EngineHandle.cache_shape``): the ``response_format`` that ``structured_output``
  adds, and the chat template a chat job is rendered with where it goes as a completions
  prompt. An answer fetched with one engine setting is not served after the setting
  changed (an answer that failed to parse without ``structured_output`` was served again
  with it, so the run could not succeed until ``agentos cache clear``). Beyond its shape
  the key does not include the engine: engines that send the same body share answers. A
  request sent as it is has an empty shape, which leaves its canonical form, and so its
  key, what it was before shapes existed.
- Multiple inference. When temperature > 0 (and an absent temperature counts as the usual
  engine default, 1.0), the request's ``sample`` index is part of the key: an agent's
  attempt k asks for sample k, so a retry gets a new sample instead of the cached answer
  it is retrying, and a re-run of the same agent through the cache gets back the same
  answers in the same order. At temperature 0 every sample is the same answer, so the
  index is left out and all attempts share one entry. Embeddings are deterministic and
  never include it.

A golden test pins the key of one fixed request: changing the canonical form silently
turns every stored entry into a miss, so it must be a deliberate change.

Rejected answers: an agent whose parser refused an answer says so with
:meth:`ResponseCache.reject`, which deletes the entry if it still holds that answer, so
neither the run's next attempts (which share the entry at temperature 0) nor a re-run is
served it again; the next answer to the request comes from an engine and is stored. An
accepted answer stays and is served as before.

Reads: :class:`ResponseCache` looks in a bounded in-memory LRU first, then asks an
in-memory Bloom filter of the table's keys (:mod:`agentos.store.cache_index`) whether the
entry may be stored at all, and only then does one primary-key lookup on ``store.db``. The
router calls it on the event loop for every job; ``store.db`` is safe there because in a
running agentos only the event-loop thread uses it (worker threads only submit writes and
flush), and the lookup takes tens of microseconds in WAL mode, never waiting for a writer.
Writes (new entries, hit counters) go through the store's writer and never block.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from agentos.errors import SpecError
from agentos.router.jobs import InferenceRequest
from agentos.store import codec
from agentos.store.cache_index import CacheKeyIndex
from agentos.store.cache_queries import (
    CacheStats,
    cache_hit,
    cache_insert,
    cache_reject,
    cache_stats,
    clear_cache,
    lookup_row,
    prune_cache,
)
from agentos.store.db import Store

__all__ = [
    "CacheStats",
    "CachedAnswer",
    "ResponseCache",
    "cache_key",
    "cache_stats",
    "canonical_json",
    "canonical_request",
    "clear_cache",
    "parse_duration",
    "prune_cache",
]

logger = logging.getLogger(__name__)

IGNORED_PARAMS = frozenset({"seed", "stream"})
"""Request parameters that are not part of the cache key (see the module docstring)."""

ASKED_ENTRIES = 4096
"""Most missed requests remembered until their answer is put (more than ever wait for an
answer at once in practice; the oldest are forgotten first)."""

DEFAULT_TEMPERATURE = 1.0
"""The temperature engines use when a request sets none (OpenAI's and llama-server's)."""


_LEAVES = frozenset({str, int, bool, type(None)})


def _normalised(value: Any) -> Any:
    """``value`` with integral floats as ints and tuples as lists, at every depth.

    Containers are copied (never changed in place); str, int, bool and None leaves are
    taken without a call, which is most of a request.
    """
    kind = type(value)
    if kind in _LEAVES:
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        return {k: v if type(v) in _LEAVES else _normalised(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [v if type(v) in _LEAVES else _normalised(v) for v in value]
    return value


def is_sampled(params: dict[str, Any]) -> bool:
    """Whether answers to a request with these parameters differ from sample to sample.

    Only a temperature that is a number ≤ 0 makes a request deterministic; an absent one is
    the engine default (1.0), and one that is not a number is taken as sampled too, since
    treating it as deterministic could serve one answer to every attempt.
    """
    temperature = params.get("temperature", DEFAULT_TEMPERATURE)
    if isinstance(temperature, int | float) and not isinstance(temperature, bool):
        return not temperature <= 0  # NaN counts as sampled
    return True


def canonical_request(
    request: InferenceRequest, model: str, shape: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """What identifies ``request`` sent to ``model`` by an engine of ``shape`` (what the
    engine changes in the body; see the module docstring), as plain JSON values.

    The content field matches what the engine client sends (absent messages are sent as
    ``[]``, an absent prompt as ``""``), so two requests that produce the same HTTP body
    have the same canonical form. Parameters are kept for embeddings too, although today's
    client does not send them: a key that is too specific costs a miss, one that is too
    general serves a wrong answer.
    """
    canonical: dict[str, Any] = {"kind": request.kind, "model": model}
    if request.kind == "chat":
        canonical["messages"] = request.messages or []
    elif request.kind == "completions":
        canonical["prompt"] = request.prompt or ""
    else:
        canonical["input"] = request.input or []
    canonical["params"] = {k: v for k, v in request.params.items() if k not in IGNORED_PARAMS}
    canonical["json_schema"] = request.json_schema
    if request.kind != "embeddings" and is_sampled(request.params):
        canonical["sample"] = request.sample
    if shape:
        canonical["engine"] = dict(shape)
    normalised: dict[str, Any] = _normalised(canonical)
    return normalised


def canonical_json(
    request: InferenceRequest, model: str, shape: Mapping[str, Any] | None = None
) -> str:
    """:func:`canonical_request` as the exact text that is hashed (and stored): sorted keys,
    no spaces, UTF-8 (``store.codec.canonical``, which writes what ``json`` writes)."""
    return codec.canonical(canonical_request(request, model, shape))


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cache_key(request: InferenceRequest, model: str, shape: Mapping[str, Any] | None = None) -> str:
    """The sha256 hex digest of :func:`canonical_json`: the cache key of the request."""
    return _hash(canonical_json(request, model, shape))


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """A stored answer. ``response`` and ``embedding`` may be shared with other hits of the
    same key (the memory LRU hands out the same objects): treat them as read-only."""

    key: str
    text: str
    response: dict[str, Any]
    embedding: list[float] | None
    prompt_tokens: int
    completion_tokens: int
    engine: str
    created_at: float
    expires_at: float | None = None


class ResponseCache:
    """Answers by cache key: a bounded in-memory LRU in front of the store's ``cache`` table.

    An entry is served only while it is fresh: before its ``expires_at`` (set from the TTL
    at the time it was written) and, when this cache has a ``ttl_s``, younger than that
    (so shortening the TTL in the config applies to entries already stored). A stale entry
    is a miss and is left for ``agentos cache prune``; the answer fetched instead replaces it.

    Used from one thread, the event loop's (it has no lock). ``hits`` and ``misses`` count
    this object's lookups. ``clock`` gives the wall time (unix seconds) that entries are
    stamped with and judged by; tests pass one they can move. The memory LRU is per
    process: an entry deleted by ``agentos cache clear`` in another process may still be
    served from it until this process ends.
    """

    def __init__(
        self,
        store: Store,
        *,
        ttl_s: float | None = None,
        memory_entries: int = 4096,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ttl_s is not None and not ttl_s > 0:
            raise ValueError(f"ResponseCache: ttl_s must be positive or None, got {ttl_s}")
        if memory_entries < 0:
            raise ValueError(f"ResponseCache: memory_entries must be ≥ 0, got {memory_entries}")
        self.store = store
        self.ttl_s = ttl_s
        self.memory_entries = memory_entries
        self.clock = clock
        self._memory: OrderedDict[str, CachedAnswer] = OrderedDict()
        self._stored = CacheKeyIndex(store, clock=clock)
        self._asked: dict[
            int, tuple[InferenceRequest, str, Mapping[str, Any] | None, str, str]
        ] = {}
        """Missed requests by ``id``: (request, model, shape, canonical JSON, key), so that the
        :meth:`put` of their answer does not canonicalize and hash them a second time.
        Holds the request itself, so its ``id`` cannot be reused while it is here."""
        self._rejected: dict[str, str] = {}
        """Refused answers by key, until an answer is put for the key again: the delete
        that :meth:`reject` queues may not be committed when the key is next asked for."""
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        """How many entries the memory LRU holds now (never more than ``memory_entries``)."""
        return len(self._memory)

    def get(
        self,
        request: InferenceRequest,
        model: str,
        *,
        key: str | None = None,
        shape: Mapping[str, Any] | None = None,
    ) -> CachedAnswer | None:
        """The fresh stored answer to ``request`` sent to ``model`` by an engine of
        ``shape``, or None.

        ``key`` is :func:`cache_key` of the request when the caller has it already. A hit
        queues a bump of the entry's hit counter with the writer; nothing here waits for it.
        """
        request_json = None
        if key is None:
            request_json = canonical_json(request, model, shape)
            key = _hash(request_json)
        now = self.clock()
        answer = self._memory.get(key)
        if answer is not None:
            if self._fresh(answer, now):
                self._memory.move_to_end(key)
            else:
                del self._memory[key]
                answer = None
        elif self._stored.may_hold(key):
            answer = self._load(key)
            if answer is not None and self._rejected.get(key) == answer.text:
                answer = None
            elif answer is not None and self._fresh(answer, now):
                self._remember(answer)
            else:
                answer = None
        if answer is None:
            self.misses += 1
            if request_json is not None:
                self._remember_asked(request, model, shape, request_json, key)
            return None
        self.hits += 1
        self.store.submit(cache_hit(key, now))
        return answer

    def put(
        self,
        request: InferenceRequest,
        model: str,
        *,
        text: str,
        response: dict[str, Any],
        embedding: list[float] | None,
        prompt_tokens: int,
        completion_tokens: int,
        engine: str,
        shape: Mapping[str, Any] | None = None,
    ) -> str:
        """Store the answer to ``request`` sent to ``model`` by an engine of ``shape``
        (replacing an older entry) and remember it in memory; returns its key.

        The JSON is serialized here, on the caller's thread, so an answer that is not JSON
        fails where it came from; the row is queued with the writer, never waited for. The
        key of a request that :meth:`get` missed is reused, so ``request`` must not have
        been changed in between (the router never changes a job's request).
        """
        asked = self._asked.pop(id(request), None)
        if (
            asked is not None
            and asked[0] is request
            and asked[1] == model
            and (asked[2] or None) == (shape or None)
        ):
            request_json, key = asked[3], asked[4]
        else:
            request_json = canonical_json(request, model, shape)
            key = _hash(request_json)
        self._rejected.pop(key, None)
        created_at = self.clock()
        expires_at = None if self.ttl_s is None else created_at + self.ttl_s
        self.store.submit(
            cache_insert(
                key=key,
                kind=request.kind,
                model=model,
                request_json=request_json,
                response_json=codec.dumps(response),
                text=text,
                embedding_json=None if embedding is None else codec.dumps(embedding),
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                engine=engine,
                created_at=created_at,
                expires_at=expires_at,
            )
        )
        self._stored.add(key)
        self._remember(
            CachedAnswer(
                key=key,
                text=text,
                response=response,
                embedding=embedding,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                engine=engine,
                created_at=created_at,
                expires_at=expires_at,
            )
        )
        return key

    def reject(self, key: str, text: str) -> None:
        """An agent refused the answer ``text`` stored under ``key``: it is not served
        again, here or in a later run (module docstring). An entry that holds another
        answer by now (stored after the refused one) is left alone."""
        answer = self._memory.get(key)
        if answer is not None and answer.text == text:
            del self._memory[key]
        self._rejected[key] = text
        if len(self._rejected) > ASKED_ENTRIES:
            del self._rejected[next(iter(self._rejected))]  # long since committed
        self.store.submit(cache_reject(key, text))

    def _remember_asked(
        self,
        request: InferenceRequest,
        model: str,
        shape: Mapping[str, Any] | None,
        request_json: str,
        key: str,
    ) -> None:
        asked = self._asked
        asked[id(request)] = (request, model, shape, request_json, key)
        if len(asked) > ASKED_ENTRIES:
            # the oldest: a request whose answer never came (its job failed)
            del asked[next(iter(asked))]

    def _fresh(self, answer: CachedAnswer, now: float) -> bool:
        if answer.expires_at is not None and answer.expires_at <= now:
            return False
        return self.ttl_s is None or answer.created_at + self.ttl_s > now

    def _remember(self, answer: CachedAnswer) -> None:
        if self.memory_entries == 0:
            return
        self._memory[answer.key] = answer
        self._memory.move_to_end(answer.key)
        while len(self._memory) > self.memory_entries:
            self._memory.popitem(last=False)

    def _load(self, key: str) -> CachedAnswer | None:
        row = lookup_row(self.store, key)
        if row is None:
            return None
        key, text, response, embedding, prompt_tokens, completion_tokens = row[:6]
        engine, created_at, expires_at = row[6:]
        try:
            decoded_response = json.loads(response)
            decoded_embedding = None if embedding is None else json.loads(embedding)
        except ValueError:
            logger.warning("agentos cache: entry %s is not valid JSON; treated as a miss", key)
            return None
        return CachedAnswer(
            key=key,
            text=text,
            response=decoded_response,
            embedding=decoded_embedding,
            prompt_tokens=prompt_tokens or 0,
            completion_tokens=completion_tokens or 0,
            engine=engine or "",
            created_at=created_at,
            expires_at=expires_at,
        )


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_duration(text: str, *, key: str | None = None) -> float:
    """Seconds in a duration written as a number and one unit: ``45s``, ``15m``, ``12h``,
    ``30d``, ``1w`` (``1.5h`` works too). Used by ``--older-than`` and the cache ``ttl``.

    Raises SpecError naming the value (and ``key``, when given) for anything else,
    including zero: no caller has a use for an empty duration.
    """
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None:
        raise SpecError(
            f"{text!r} is not a duration; write a number and a unit: 45s, 15m, 12h, 30d or 1w",
            key=key,
        )
    seconds = float(match[1]) * _UNIT_SECONDS[match[2].lower()]
    if not seconds > 0 or not math.isfinite(seconds):
        raise SpecError(f"the duration {text!r} must be longer than zero", key=key)
    return seconds
