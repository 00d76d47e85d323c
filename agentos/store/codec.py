"""JSON text for the store, fast, and byte for byte what the standard library writes.

Every row agentos records carries JSON (events, model calls, results, cache entries), so
encoding is on the hot path of every job. ``orjson`` encodes ten to thirty times faster
than ``json``, but does not write every value the same way: floats in exponent range
(``1e-05`` against ``0.00001``), NaN and infinities (``null``), integers beyond 64 bits,
lone surrogates and non-string keys (refused). Stored text must not lose anything, and
the hashes of the audit trail and the cache keys must stay exactly what they were, so:

- :func:`is_plain` says whether a value is made only of what both libraries write alike
  (str keys; str, int, bool, None; floats written without an exponent; lists, tuples
  and dicts of those — exact types, no subclasses);
- :func:`canonical` uses orjson for plain values and the standard library for the rest,
  so its output is always exactly the standard library's;
- :func:`dumps` (stored text, not hashed) uses orjson unless the value holds what orjson
  cannot write without loss (NaN and infinities, integers beyond 64 bits, lone
  surrogates, non-str keys), so its output decodes to what the standard library's does.

:func:`nested_deeper_than` bounds the nesting of what comes from outside (engine
answers, parsed model output) before it is stored: orjson writes 255 levels at most and
``json.loads`` reads about 990, so a deeper value could be written but not read back.

Results are ``str``, never ``bytes``: SQLite stores ``bytes`` as a BLOB, and JSON columns
are TEXT. Reading stays with ``json.loads``: ``orjson.loads`` turns integers beyond 64 bits
into floats, which would change what a record says (and its hash).
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

_FLOAT_PLAIN_LOW = 1e-4
_FLOAT_PLAIN_HIGH = 1e16
"""``repr`` (and so ``json``) writes floats outside [1e-4, 1e16) with an exponent, orjson
differently; inside it (and zero) both write the same shortest digits."""

_ATOMS = frozenset({str, int, bool, type(None)})
"""Leaves both libraries write alike whatever their value (exact types)."""

_STRICT = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
"""Refuse what ``json`` refuses (datetimes, dataclasses) instead of encoding it."""
_SORTED = _STRICT | orjson.OPT_SORT_KEYS


def is_plain(value: Any) -> bool:
    """Whether orjson and ``json`` write ``value`` identically (see the module docstring).

    Integers are not range-checked here: orjson refuses those beyond 64 bits, and the
    callers fall back to ``json`` when it does.
    """
    kind = type(value)
    if kind in _ATOMS:
        return True
    if kind is float:
        return value == 0.0 or _FLOAT_PLAIN_LOW <= abs(value) < _FLOAT_PLAIN_HIGH
    # plain loops, not all(...): a generator per container costs more than the walk;
    # str, int, bool and None items are taken without a call (most of a value)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                return False
            if type(item) not in _ATOMS and not is_plain(item):
                return False
        return True
    if kind is list or kind is tuple:
        for item in value:  # noqa: SIM110
            if type(item) not in _ATOMS and not is_plain(item):
                return False
        return True
    return False


def dumps(value: Any) -> str:
    """``value`` as JSON text that decodes to what ``json.dumps(value)`` decodes to
    (orjson's shorter spelling of exponent floats decodes to the same float).

    Raises TypeError/ValueError for what ``json.dumps`` refuses.
    """
    try:
        text = orjson.dumps(value, option=_STRICT)
    except TypeError:
        # an integer beyond 64 bits, a lone surrogate, a non-str key: json writes those
        return _json_storable(value)
    if b"null" in text and not _finite(value):
        return _json_storable(value)  # orjson wrote NaN or inf as null
    return text.decode()


def _json_storable(value: Any) -> str:
    """``json.dumps(value, ensure_ascii=False)``, unless that holds a lone surrogate: then
    with ``\\udXXX`` escapes (``ensure_ascii=True``), which decodes to the same value.
    SQLite stores UTF-8, and a lone surrogate has no UTF-8 form: the write would fail."""
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode()
    except UnicodeEncodeError:
        return json.dumps(value)
    return text


def _finite(value: Any) -> bool:
    """No NaN or infinity anywhere in ``value`` (subclasses included: orjson writes them)."""
    kind = type(value)
    if kind is dict:
        items: Any = value.values()
    elif kind is list or kind is tuple:
        items = value
    elif kind is float:
        return math.isfinite(value)
    elif kind in _ATOMS:
        return True
    elif isinstance(value, float):
        return math.isfinite(value)
    elif isinstance(value, dict):
        items = value.values()
    elif isinstance(value, list | tuple):
        items = value
    else:
        return True
    for item in items:
        if type(item) in _ATOMS:  # most leaves: no call
            continue
        if not _finite(item):
            return False
    return True


def canonical(value: Any) -> str:
    """``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``:
    the canonical form that hashes are taken of, exactly."""
    if is_plain(value):
        return canonical_plain(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def dumps_plain(value: Any) -> str:
    """:func:`dumps` of a value the caller has found :func:`is_plain` (one walk, not two)."""
    try:
        return orjson.dumps(value, option=_STRICT).decode()
    except TypeError:
        # an integer beyond 64 bits or a lone surrogate: json writes those
        return json.dumps(value, ensure_ascii=False)


def canonical_plain(value: Any) -> str:
    """:func:`canonical` of a value the caller has found :func:`is_plain`."""
    try:
        return orjson.dumps(value, option=_SORTED).decode()
    except TypeError:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists and dicts more than ``limit`` levels (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if type(node) is dict:
            stack.extend((item, depth + 1) for item in node.values() if type(item) in _NESTS)
        elif type(node) is list:
            stack.extend((item, depth + 1) for item in node if type(item) in _NESTS)
    return False


_NESTS = (dict, list)
