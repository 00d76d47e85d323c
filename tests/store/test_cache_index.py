"""The in-memory index of the cache table's keys: no lookup for keys certainly not
stored, and never a stored key reported missing (other processes included)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from agentos.store import Store
from agentos.store import cache_index as index_module
from agentos.store.cache_index import CHUNK, CacheKeyIndex
from agentos.store.cache_queries import cache_insert, clear_cache


def key(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def store_keys(store: Store, numbers: range) -> None:
    for n in numbers:
        store.submit(
            cache_insert(
                key=key(n),
                kind="chat",
                model="m",
                request_json="{}",
                response_json="{}",
                text="t",
                embedding_json=None,
                prompt_tokens=0,
                completion_tokens=0,
                engine="e",
                created_at=0.0,
                expires_at=None,
            )
        )
    store.flush()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_stored_keys_are_always_held_and_most_others_are_not(db_path: Path) -> None:
    with Store(db_path) as store:
        store_keys(store, range(3 * CHUNK + 7))
        index = CacheKeyIndex(store, clock=Clock())
        # filling: every key may be stored until the whole table was read
        assert index.may_hold(key(10**6))
        while not index.filled:
            index.may_hold(key(10**6))
        assert all(index.may_hold(key(n)) for n in range(3 * CHUNK + 7))
        absent = [n for n in range(10**6, 10**6 + 5000) if index.may_hold(key(n))]
        assert len(absent) < 5  # false positives are rare with few keys
        index.add(key(10**6 + 1))
        assert index.may_hold(key(10**6 + 1))


def test_keys_stored_by_another_process_are_seen_after_a_refresh(db_path: Path) -> None:
    clock = Clock()
    with Store(db_path) as store, Store(db_path) as other:
        store_keys(store, range(10))
        index = CacheKeyIndex(store, clock=clock)
        assert index.may_hold(key(0)) and index.filled
        store_keys(other, range(100, 110))
        clock.now += index_module.REFRESH_S
        assert all(index.may_hold(key(n)) for n in range(100, 110))
        # cleared and filled anew by the other process: rowids start over
        clear_cache(other)
        store_keys(other, range(200, 203))
        clock.now += index_module.REFRESH_S
        assert all(index.may_hold(key(n)) for n in range(200, 203))
        assert index.last_rowid == 3


@pytest.mark.parametrize("size", [0, CHUNK])
def test_a_table_of_exactly_a_chunk_or_empty_is_filled(db_path: Path, size: int) -> None:
    with Store(db_path) as store:
        store_keys(store, range(size))
        index = CacheKeyIndex(store, clock=Clock())
        for _ in range(3):
            index.may_hold(key(-1))
        assert index.filled
        assert all(index.may_hold(key(n)) for n in range(size))
