"""Digests that extend the audit trail to what runs produced, and the optional audit key.

The event chain (:class:`agentos.store.queries.RunEvents`) proves a run's events; the rows
that hold its outputs are written elsewhere (``results`` by the agents, ``llm_calls`` by
the router, ``tool_calls`` by the tools), often thousands a second, so they are not
chained one after another. Each gets instead, at record time:

- a **row digest** (``digest`` column), ``mac=…;crc=…``: one 128-bit MAC of
  the covered fields (:data:`COVERED`) bound to the row's identity (table, id, run), and
  a CRC-32 of each covered field. The MAC is the proof; the CRCs only point at the field
  that changed, so the audit can name it (one MAC a row instead of one per field keeps
  the cost per recorded model call to about a microsecond or two). Hashing the text that
  is stored (already serialized for the insert) needs no extra serialization.
- a run-level **outputs seal** (``runs.outputs_seal``), written in the writer thread when
  the run finishes (:func:`seal_outputs`), after every row recorded before: per table, the
  number of rows, the highest rowid and a hash of their digests in rowid order, with a MAC
  over them, the run id and the run's ``final_hash``. Deleted rows change the count;
  rows recorded after the run finished (calls still in flight) lie above the rowid.

**The key.** With :data:`AUDIT_KEY_ENV` set, every MAC (row digests, the seal, and the
event chain's links and genesis) is an HMAC-SHA256 with that key instead of a plain
SHA-256, so someone who can write the database but does not know the key cannot rebuild
a chain or a digest that verifies. The run row records :func:`key_marker` (a fingerprint
of the key, not the key), so the audit can tell "keyed, and you gave no key", "a different
key" and "tampered with" apart. Without a key, the digests catch edits by hand and
corruption, not a forger who recomputes them (the algorithm is public).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import sqlite3
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

AUDIT_KEY_ENV: Final = "AGENTOS_AUDIT_KEY"
"""The environment variable holding the audit key (any non-empty text)."""

COVERED: Final[dict[str, tuple[str, ...]]] = {
    "results": ("data",),
    "llm_calls": ("response", "status", "error"),
    "tool_calls": ("output", "error"),
}
"""The output tables and, for each, the fields a row digest covers."""

IDENTITY: Final[dict[str, tuple[str, ...]]] = {
    "results": ("run_id", "job_id", "created_at"),
    "llm_calls": ("id", "run_id"),
    "tool_calls": ("id", "run_id"),
}
"""What binds a row's digest to that row (``results.id`` is given by SQLite on insert,
so its rows are bound by run, job and time instead)."""

OUTPUT_TABLES: Final = tuple(COVERED)

_KEY_CHECK = b"agentos-audit-key-check"
_MARKER_PREFIX = "hmac-sha256:"
_MAC_BYTES = 16  # 128 bits: plenty for a MAC that is checked, never searched


def audit_key() -> bytes | None:
    """The audit key from the environment, or None (unset or empty)."""
    value = os.environ.get(AUDIT_KEY_ENV)
    return value.encode("utf-8") if value else None


def key_marker(key: bytes | None) -> str | None:
    """What a run row records about its key: None for no key, else a fingerprint that
    tells a wrong key from tampering (an HMAC of a constant; it does not reveal the key)."""
    if key is None:
        return None
    return _MARKER_PREFIX + mac(key, _KEY_CHECK)[:16]


class Mac:
    """HMAC-SHA256 with one key (SHA-256 without one), its padded key states hashed once.

    ``hmac.digest`` sets the key up again on every call (about 2 µs); copying the two
    prepared SHA-256 states costs under 1 µs, and this is paid per recorded row.
    """

    __slots__ = ("_inner", "_outer", "keyed")

    def __init__(self, key: bytes | None) -> None:
        self.keyed = key is not None
        if key is None:
            self._inner = self._outer = hashlib.sha256()
            return
        if len(key) > 64:  # HMAC's rule for keys longer than SHA-256's block
            key = hashlib.sha256(key).digest()
        padded = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))

    def digest(self, data: bytes) -> bytes:
        if not self.keyed:
            return hashlib.sha256(data).digest()
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def hex(self, data: bytes) -> str:
        return self.digest(data).hex()


@functools.lru_cache(maxsize=8)
def mac_for(key: bytes | None) -> Mac:
    """The :class:`Mac` of ``key`` (made once per key)."""
    return Mac(key)


def mac(key: bytes | None, data: bytes) -> str:
    """HMAC-SHA256 of ``data`` with ``key``, or SHA-256 without one, as hex."""
    return mac_for(key).hex(data)


def _tagged(value: Any) -> str:
    if value is None:
        return "\x00"
    if isinstance(value, str):
        return "s" + value
    return "r" + repr(value)


def _row_parts(table: str, row: Mapping[str, Any]) -> tuple[bytes, list[bytes]]:
    get = row.get
    identity = table
    for column in IDENTITY[table]:
        identity += "\x1f" + _tagged(get(column))
    values = [_tagged(get(f)).encode("utf-8", "surrogatepass") for f in COVERED[table]]
    return identity.encode("utf-8", "surrogatepass"), values


def _row_mac(mac: Mac, identity: bytes, values: list[bytes]) -> str:
    return mac.digest(identity + b"\x1f" + b"\x1f".join(values))[:_MAC_BYTES].hex()


def _crcs(values: list[bytes]) -> str:
    return b"".join([zlib.crc32(value).to_bytes(4, "big") for value in values]).hex()


def row_digest(key: bytes | None, table: str, row: Mapping[str, Any]) -> str:
    """The ``digest`` of an output row of ``table``, from the values as they are stored
    (JSON already serialized): ``mac=<32 hex>;crc=<8 hex per covered field, in order>``."""
    identity, values = _row_parts(table, row)
    return "mac=" + _row_mac(mac_for(key), identity, values) + ";crc=" + _crcs(values)


def _tagged_bytes(value: str | None) -> bytes:
    return b"\x00" if value is None else ("s" + value).encode("utf-8", "surrogatepass")


def llm_call_digest(mac: Mac, row: Mapping[str, Any]) -> str:
    """:func:`row_digest` of an ``llm_calls`` row (the same text), written out for the
    router's hot path: about 40% cheaper than the general one (a microsecond or so a
    call). The id, run, response, status and error are text or None there."""
    response = _tagged_bytes(row["response"])
    status = _tagged_bytes(row["status"])
    error = _tagged_bytes(row["error"])
    run_id = row["run_id"]
    identity = "llm_calls\x1fs" + row["id"] + ("\x1f\x00" if run_id is None else "\x1fs" + run_id)
    data = identity.encode("utf-8", "surrogatepass") + b"\x1f" + response + b"\x1f" + status
    tag = mac.digest(data + b"\x1f" + error)[:_MAC_BYTES].hex()
    crcs = (zlib.crc32(response) << 64) | (zlib.crc32(status) << 32) | zlib.crc32(error)
    return "mac=" + tag + ";crc=" + crcs.to_bytes(12, "big").hex()


@dataclass(frozen=True, slots=True)
class RowCheck:
    """What :func:`check_row` found about one output row."""

    intact: bool
    fields: tuple[str, ...] = ()
    """When not intact: the covered fields whose content changed, as far as the CRCs
    tell; empty when they do not (the digest was rewritten, or the row was moved)."""
    malformed: bool = False
    """The digest is missing or is not one agentos writes."""


def check_row(key: bytes | None, table: str, row: Mapping[str, Any]) -> RowCheck:
    """Check an output row (with its ``digest``) against what was recorded."""
    stored = row.get("digest")
    if not isinstance(stored, str):
        return RowCheck(False, malformed=True)
    parts = dict(part.partition("=")[::2] for part in stored.split(";"))
    fields = COVERED[table]
    if set(parts) != {"mac", "crc"} or len(parts["crc"]) != 8 * len(fields):
        return RowCheck(False, malformed=True)
    identity, values = _row_parts(table, row)
    if hmac.compare_digest(parts["mac"], _row_mac(mac_for(key), identity, values)):
        return RowCheck(True)
    now = _crcs(values)
    changed = tuple(
        field
        for i, field in enumerate(fields)
        if parts["crc"][8 * i : 8 * i + 8] != now[8 * i : 8 * i + 8]
    )
    return RowCheck(False, changed)


# -- the seal ---------------------------------------------------------------------------


def outputs_summary(conn: sqlite3.Connection, run_id: str, table: str, upto: int | None) -> str:
    """``table:count:last_rowid:hash`` of the run's rows in ``table`` (up to rowid
    ``upto`` when given), the digests hashed in rowid order."""
    sql = f"SELECT rowid, digest FROM [{table}] WHERE run_id = ?"
    params: list[Any] = [run_id]
    if upto is not None:
        sql += " AND rowid <= ?"
        params.append(upto)
    digests = hashlib.sha256()
    count = last = 0
    for rowid, digest in conn.execute(sql + " ORDER BY rowid", params):
        digests.update((digest if isinstance(digest, str) else "-").encode() + b"\n")
        count += 1
        last = rowid
    return f"{table}:{count}:{last}:{digests.hexdigest()}"


def seal_mac(key: bytes | None, run_id: str, final_hash: str | None, body: str) -> str:
    data = f"agentos-outputs\x1f{run_id}\x1f{final_hash or ''}\x1f{body}"
    return mac(key, data.encode("utf-8"))


def seal_outputs(conn: sqlite3.Connection, run_id: str, key: bytes | None) -> None:
    """Store the run's outputs seal (see the module docstring); runs in the writer thread,
    in the transaction that finishes the run, after its ``final_hash`` is set."""
    row = conn.execute("SELECT final_hash FROM runs WHERE id = ?", (run_id,)).fetchone()
    final_hash = row[0] if row else None
    body = " ".join(outputs_summary(conn, run_id, table, None) for table in OUTPUT_TABLES)
    seal = f"{body} {seal_mac(key, run_id, final_hash, body)}"
    conn.execute("UPDATE runs SET outputs_seal = ? WHERE id = ?", (seal, run_id))


def parse_seal(seal: str) -> tuple[dict[str, tuple[int, int, str]], str, str] | None:
    """``({table: (count, last_rowid, hash)}, body, mac)`` of a stored seal; None when it
    is not one agentos writes."""
    *parts, seal_hex = seal.split(" ")
    tables: dict[str, tuple[int, int, str]] = {}
    try:
        for part in parts:
            table, count, last, digest = part.split(":")
            tables[table] = (int(count), int(last), digest)
    except ValueError:
        return None
    if set(tables) != set(OUTPUT_TABLES):
        return None
    return tables, " ".join(parts), seal_hex
