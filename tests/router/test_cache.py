"""The response cache: key stability, the sample sequence, TTL, maintenance, the memory LRU.

Every test uses a real SQLite file in ``tmp_path``; a "re-run" opens a new Store and a new
ResponseCache on the same file, which is what a second agentos process sees.
"""

from __future__ import annotations

import copy
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentos.errors import SpecError
from agentos.router.cache import (
    ASKED_ENTRIES,
    ResponseCache,
    cache_key,
    cache_stats,
    canonical_json,
    canonical_request,
    clear_cache,
    parse_duration,
    prune_cache,
)
from agentos.router.jobs import InferenceRequest
from agentos.store import Store

MODEL = "smollm2-135m"


def chat(
    content: str = "Name a colour.",
    *,
    sample: int = 0,
    json_schema: dict[str, Any] | None = None,
    **params: Any,
) -> InferenceRequest:
    return InferenceRequest(
        kind="chat",
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": content},
        ],
        params=params,
        json_schema=json_schema,
        sample=sample,
    )


def answer(cache: ResponseCache, request: InferenceRequest, text: str, **extra: Any) -> str:
    """Store ``text`` as the engine's answer to ``request``; returns the key."""
    response = {"choices": [{"message": {"role": "assistant", "content": text}}], **extra}
    return cache.put(
        request,
        MODEL,
        text=text,
        response=response,
        embedding=None,
        prompt_tokens=7,
        completion_tokens=len(text),
        engine="local",
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "agentos.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    with Store(db_path) as opened:
        yield opened


# -- the key -----------------------------------------------------------------------------


def test_golden_key_of_a_fixed_request() -> None:
    """Changing the canonical form orphans every stored entry: it must be deliberate."""
    request = InferenceRequest(
        kind="chat",
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Name a colour. ¿Qué?"},
        ],
        params={"temperature": 0.7, "max_tokens": 64, "seed": 123},
        json_schema={
            "type": "object",
            "properties": {"colour": {"type": "string"}},
            "required": ["colour"],
        },
        sample=2,
    )
    assert canonical_json(request, MODEL) == (
        '{"json_schema":{"properties":{"colour":{"type":"string"}},"required":["colour"],'
        '"type":"object"},"kind":"chat","messages":[{"content":"You are terse.","role":'
        '"system"},{"content":"Name a colour. ¿Qué?","role":"user"}],"model":"smollm2-135m",'
        '"params":{"max_tokens":64,"temperature":0.7},"sample":2}'
    )
    assert (
        cache_key(request, MODEL)
        == "19207ab85be8756c089110d83b2ca21aee6eca5b71cd9805010b0fdc085f7350"
    )


def test_key_ignores_dict_key_order_at_every_depth() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer", "minimum": 0}, "b": {"type": "string"}},
        "required": ["a"],
    }
    reordered_schema = {
        "required": ["a"],
        "properties": {"b": {"type": "string"}, "a": {"minimum": 0, "type": "integer"}},
        "type": "object",
    }
    one = InferenceRequest(
        kind="chat",
        messages=[{"role": "user", "content": "hi", "name": "ann"}],
        params={"temperature": 0.5, "max_tokens": 10, "stop": ["\n"]},
        json_schema=schema,
    )
    other = InferenceRequest(
        kind="chat",
        messages=[{"name": "ann", "content": "hi", "role": "user"}],
        params={"stop": ["\n"], "max_tokens": 10, "temperature": 0.5},
        json_schema=reordered_schema,
    )
    assert cache_key(one, MODEL) == cache_key(other, MODEL)


def test_integral_floats_hash_like_ints_at_every_depth() -> None:
    ints = chat(temperature=1, max_tokens=64, json_schema={"type": "number", "maximum": 10})
    floats = chat(temperature=1.0, max_tokens=64.0, json_schema={"type": "number", "maximum": 10.0})
    assert cache_key(ints, MODEL) == cache_key(floats, MODEL)
    assert cache_key(chat(temperature=0.5), MODEL) != cache_key(chat(temperature=1), MODEL)


def test_seed_and_stream_are_not_part_of_the_key() -> None:
    plain = chat(temperature=0.7)
    assert cache_key(plain, MODEL) == cache_key(chat(temperature=0.7, seed=99), MODEL)
    assert cache_key(plain, MODEL) == cache_key(chat(temperature=0.7, stream=True), MODEL)
    assert "seed" not in canonical_request(chat(temperature=0.7, seed=99), MODEL)["params"]


def test_whatever_changes_the_answer_changes_the_key() -> None:
    base = chat(temperature=0.7, max_tokens=64)
    variants = [
        chat("Name a fruit.", temperature=0.7, max_tokens=64),
        chat(temperature=0.8, max_tokens=64),
        chat(temperature=0.7, max_tokens=65),
        chat(temperature=0.7, max_tokens=64, top_p=0.9),
        chat(temperature=0.7, max_tokens=64, json_schema={"type": "object"}),
        chat(temperature=0.7, max_tokens=64, json_schema={"type": "array"}),
    ]
    keys = {cache_key(base, MODEL), cache_key(base, "other-model")}
    keys |= {cache_key(v, MODEL) for v in variants}
    assert len(keys) == 2 + len(variants)


def test_kinds_and_their_content_are_told_apart() -> None:
    completion = InferenceRequest(kind="completions", prompt="hi", params={"temperature": 0})
    chat_hi = InferenceRequest(
        kind="chat", messages=[{"role": "user", "content": "hi"}], params={"temperature": 0}
    )
    embed = InferenceRequest(kind="embeddings", input=["hi"])
    keys = {cache_key(r, MODEL) for r in (completion, chat_hi, embed)}
    assert len(keys) == 3
    other_prompt = InferenceRequest(kind="completions", prompt="ho", params={"temperature": 0})
    assert cache_key(other_prompt, MODEL) != cache_key(completion, MODEL)
    # What the engine client sends for absent content: [] and "".
    assert cache_key(InferenceRequest(kind="chat"), MODEL) == cache_key(
        InferenceRequest(kind="chat", messages=[]), MODEL
    )


def test_samples_have_distinct_keys_when_temperature_is_above_zero() -> None:
    keys = [cache_key(chat(temperature=0.7, sample=k), MODEL) for k in range(5)]
    assert len(set(keys)) == 5
    assert keys == [cache_key(chat(temperature=0.7, sample=k), MODEL) for k in range(5)]


def test_an_absent_temperature_is_the_engine_default_and_samples() -> None:
    assert cache_key(chat(sample=0), MODEL) != cache_key(chat(sample=1), MODEL)
    assert canonical_request(chat(sample=3), MODEL)["sample"] == 3


def test_temperature_zero_ignores_the_sample() -> None:
    keys = {cache_key(chat(temperature=0, sample=k), MODEL) for k in range(5)}
    assert keys == {cache_key(chat(temperature=0.0), MODEL)}
    assert "sample" not in canonical_request(chat(temperature=0, sample=4), MODEL)


def test_embeddings_ignore_the_sample() -> None:
    one = InferenceRequest(kind="embeddings", input=["a", "b"], sample=0)
    two = InferenceRequest(kind="embeddings", input=["a", "b"], sample=3)
    assert cache_key(one, MODEL) == cache_key(two, MODEL)


def test_canonical_form_does_not_alter_the_request() -> None:
    request = chat(temperature=1.0, seed=5, json_schema={"maximum": 2.0})
    before = copy.deepcopy(request)
    cache_key(request, MODEL)
    assert request == before


# -- the sample sequence -----------------------------------------------------------------


def test_a_rerun_through_the_cache_gets_the_same_samples_in_order(db_path: Path) -> None:
    texts = ["red", "green", "blue", "teal", "ochre"]
    with Store(db_path) as first_run:
        cache = ResponseCache(first_run)
        for k, text in enumerate(texts):
            assert cache.get(chat(temperature=0.9, sample=k), MODEL) is None
            answer(cache, chat(temperature=0.9, sample=k), text)
        assert cache.misses == 5
        assert cache.hits == 0

    with Store(db_path) as second_run:
        cache = ResponseCache(second_run)
        got = []
        for k in range(5):
            hit = cache.get(chat(temperature=0.9, sample=k), MODEL)
            assert hit is not None
            got.append(hit.text)
            assert hit.response["choices"][0]["message"]["content"] == texts[k]
            assert hit.engine == "local"
            assert hit.prompt_tokens == 7
            assert hit.completion_tokens == len(texts[k])
        assert got == texts
        # The sixth attempt has no recorded sample: it must go to an engine.
        assert cache.get(chat(temperature=0.9, sample=5), MODEL) is None
        assert (cache.hits, cache.misses) == (5, 1)
        second_run.flush()
        assert cache_stats(second_run).hits == 5


def test_an_answer_is_served_from_memory_before_it_is_committed(store: Store) -> None:
    cache = ResponseCache(store)
    key = answer(cache, chat(temperature=0), "red")
    hit = cache.get(chat(temperature=0, sample=3), MODEL)
    assert hit is not None
    assert (hit.key, hit.text) == (key, "red")


def test_embeddings_round_trip(db_path: Path) -> None:
    request = InferenceRequest(kind="embeddings", input=["hello"])
    with Store(db_path) as store:
        ResponseCache(store).put(
            request,
            MODEL,
            text="",
            response={"data": [{"embedding": [0.25, -1.5]}]},
            embedding=[0.25, -1.5],
            prompt_tokens=1,
            completion_tokens=0,
            engine="local",
        )
    with Store(db_path) as store:
        hit = ResponseCache(store).get(request, MODEL)
        assert hit is not None
        assert hit.embedding == [0.25, -1.5]


# -- TTL ---------------------------------------------------------------------------------


class Clock:
    """Wall time that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_an_entry_past_its_ttl_is_a_miss_and_is_pruned(db_path: Path) -> None:
    clock = Clock()
    with Store(db_path) as store:
        cache = ResponseCache(store, ttl_s=60, clock=clock)
        answer(cache, chat(temperature=0, content="short-lived"), "red")
        answer(ResponseCache(store, clock=clock), chat(temperature=0, content="kept"), "blue")
        clock.now += 59
        assert cache.get(chat(temperature=0, content="short-lived"), MODEL) is not None
        clock.now += 1
        assert cache.get(chat(temperature=0, content="short-lived"), MODEL) is None
        store.flush()
        assert cache_stats(store, now=clock.now).expired == 1

    with Store(db_path) as store:
        # A new process with no TTL configured: the expiry stored with the entry still holds.
        fresh = ResponseCache(store, clock=clock)
        assert fresh.get(chat(temperature=0, content="short-lived"), MODEL) is None
        assert fresh.get(chat(temperature=0, content="kept"), MODEL) is not None
        assert prune_cache(store, expired_only=True, now=clock.now) == 1
        stats = cache_stats(store, now=clock.now)
        assert (stats.entries, stats.expired) == (1, 0)
        assert fresh.get(chat(temperature=0, content="kept"), MODEL) is not None


def test_a_shorter_ttl_applies_to_entries_already_stored(db_path: Path) -> None:
    clock = Clock()
    with Store(db_path) as store:
        answer(ResponseCache(store, clock=clock), chat(temperature=0), "red")
    clock.now += 120
    with Store(db_path) as store:
        long_ttl = ResponseCache(store, ttl_s=3600, clock=clock)
        assert long_ttl.get(chat(temperature=0), MODEL) is not None
        short_ttl = ResponseCache(store, ttl_s=60, clock=clock)
        assert short_ttl.get(chat(temperature=0), MODEL) is None


# -- stats, clear, prune -----------------------------------------------------------------


def test_stats_count_entries_hits_models_and_ages(store: Store) -> None:
    empty = cache_stats(store)
    assert (empty.entries, empty.hits, empty.bytes, empty.oldest, empty.expired) == (
        0,
        0,
        0,
        None,
        0,
    )
    cache = ResponseCache(store)
    before = time.time()
    answer(cache, chat("a", temperature=0), "one")
    answer(cache, chat("b", temperature=0), "two")
    cache.put(
        chat("c", temperature=0),
        "other-model",
        text="three",
        response={},
        embedding=None,
        prompt_tokens=0,
        completion_tokens=0,
        engine="remote",
    )
    for _ in range(3):
        assert cache.get(chat("a", temperature=0), MODEL) is not None
    store.flush()
    stats = cache_stats(store)
    assert stats.entries == 3
    assert stats.hits == 3
    assert stats.by_model == {MODEL: 2, "other-model": 1}
    assert stats.oldest is not None and stats.newest is not None
    assert before <= stats.oldest <= stats.newest <= time.time()
    assert stats.bytes > len("onetwothree")
    assert stats.expired == 0
    row = store.db.execute("SELECT last_hit_at FROM cache WHERE text = 'one'").fetchone()
    assert row[0] is not None and row[0] >= before


def test_clear_deletes_everything_and_says_how_much(db_path: Path) -> None:
    with Store(db_path) as store:
        cache = ResponseCache(store)
        for k in range(4):
            answer(cache, chat(temperature=0.5, sample=k), f"answer {k}")
        store.flush()
        assert clear_cache(store) == 4
        assert cache_stats(store).entries == 0
        assert clear_cache(store) == 0
    with Store(db_path) as store:
        assert ResponseCache(store).get(chat(temperature=0.5, sample=0), MODEL) is None


def test_prune_by_age_also_removes_expired_entries(store: Store) -> None:
    clock = Clock()
    cache = ResponseCache(store, clock=clock)
    answer(cache, chat("old", temperature=0), "old")
    answer(ResponseCache(store, ttl_s=10, clock=clock), chat("expired", temperature=0), "expired")
    clock.now += 100
    answer(cache, chat("new", temperature=0), "new")
    store.flush()
    assert prune_cache(store, older_than_s=3600, now=clock.now) == 1  # only the expired one
    assert prune_cache(store, older_than_s=50, now=clock.now) == 1  # the old one
    left = [r[0] for r in store.db.execute("SELECT text FROM cache").fetchall()]
    assert left == ["new"]
    assert prune_cache(store, now=clock.now) == 0
    assert prune_cache(store, older_than_s=0, now=clock.now + 1) == 1
    with pytest.raises(ValueError):
        prune_cache(store, older_than_s=10, expired_only=True)


def test_prune_gives_space_back_when_auto_vacuum_is_incremental(db_path: Path) -> None:
    setup = sqlite3.connect(db_path)
    setup.execute("PRAGMA auto_vacuum=INCREMENTAL")
    setup.execute("CREATE TABLE made_with_incremental_vacuum (x)")
    setup.commit()
    setup.close()
    with Store(db_path) as store:
        cache = ResponseCache(store, memory_entries=0)
        for k in range(200):
            answer(cache, chat(temperature=0.5, sample=k), "x" * 4000)
        store.flush()
        assert clear_cache(store) == 200
        freelist = store.db.execute("PRAGMA freelist_count").fetchone()[0]
        assert freelist == 0


# -- the memory LRU ----------------------------------------------------------------------


def test_the_memory_lru_is_bounded_and_keeps_the_recently_used(store: Store) -> None:
    cache = ResponseCache(store, memory_entries=3)
    keys = [answer(cache, chat(temperature=0.5, sample=k), f"s{k}") for k in range(3)]
    assert cache.get(chat(temperature=0.5, sample=0), MODEL) is not None  # now most recent
    answer(cache, chat(temperature=0.5, sample=3), "s3")
    assert len(cache) == 3
    assert keys[1] not in cache._memory  # the least recently used went
    assert keys[0] in cache._memory
    for k in range(10):
        answer(cache, chat(temperature=0.5, sample=10 + k), "more")
    assert len(cache) == 3
    store.flush()
    # Evicted from memory is not evicted from the cache: the store still answers.
    hit = cache.get(chat(temperature=0.5, sample=1), MODEL)
    assert hit is not None and hit.text == "s1"


def test_a_miss_then_put_stores_under_the_key_of_the_request(store: Store) -> None:
    """The key a miss computed is reused by the put of its answer, and only for that very
    request object and model."""
    cache = ResponseCache(store)
    request = chat(temperature=0.5, sample=7)
    assert cache.get(request, MODEL) is None
    assert answer(cache, request, "teal") == cache_key(request, MODEL)
    other = chat(temperature=0.5, sample=8)
    assert cache.get(other, MODEL) is None
    key = cache.put(
        other,
        "another-model",
        text="x",
        response={},
        embedding=None,
        prompt_tokens=0,
        completion_tokens=0,
        engine="e",
    )
    assert key == cache_key(other, "another-model")
    store.flush()
    row = store.db.execute("SELECT request FROM cache WHERE key = ?", [key]).fetchone()
    assert row[0] == canonical_json(other, "another-model")


def test_a_miss_for_a_key_never_stored_does_not_read_the_store(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agentos.router.cache as cache_module

    lookups: list[str] = []
    real_lookup = cache_module.lookup_row

    def counting_lookup(store: Store, key: str) -> Any:
        lookups.append(key)
        return real_lookup(store, key)

    monkeypatch.setattr(cache_module, "lookup_row", counting_lookup)
    cache = ResponseCache(store, memory_entries=0)
    answer(cache, chat(temperature=0.5, sample=1), "one")
    store.flush()
    for k in range(2, 200):
        assert cache.get(chat(temperature=0.5, sample=k), MODEL) is None
    assert len(lookups) < 5
    hit = cache.get(chat(temperature=0.5, sample=1), MODEL)  # stored: looked up, found
    assert hit is not None and hit.text == "one"
    assert lookups[-1] == cache_key(chat(temperature=0.5, sample=1), MODEL)


def test_misses_without_an_answer_are_not_remembered_forever(store: Store) -> None:
    cache = ResponseCache(store)
    for k in range(ASKED_ENTRIES + 50):
        assert cache.get(chat(temperature=0.5, sample=k), MODEL) is None
    assert len(cache._asked) == ASKED_ENTRIES


def test_memory_entries_zero_reads_the_store_every_time(store: Store) -> None:
    cache = ResponseCache(store, memory_entries=0)
    answer(cache, chat(temperature=0), "red")
    assert len(cache) == 0
    store.flush()
    hit = cache.get(chat(temperature=0), MODEL)
    assert hit is not None and hit.text == "red"


def test_bad_settings_are_refused(store: Store) -> None:
    with pytest.raises(ValueError):
        ResponseCache(store, ttl_s=0)
    with pytest.raises(ValueError):
        ResponseCache(store, memory_entries=-1)


# -- durations ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("45s", 45),
        ("15m", 900),
        ("12h", 43_200),
        ("30d", 2_592_000),
        ("1w", 604_800),
        ("1.5h", 5400),
        (" 2D ", 172_800),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "d", "-1d", "1y", "1h30m", "0s", "1e3s"])
def test_parse_duration_names_a_bad_value(text: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_duration(text, key="cache.ttl")
    assert repr(text) in str(info.value)
    assert info.value.key == "cache.ttl"
