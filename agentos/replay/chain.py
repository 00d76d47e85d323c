"""Checking one run's events against their hash chain (the engine of
:func:`agentos.replay.audit.audit_run`).

What it finds, and the names it gives:

- an **edited** event: its content no longer matches its own hash (or it was re-hashed,
  and the next event no longer links to it);
- a **deleted** event: a number the chain needs is not there, also when the later events
  were renumbered to close the gap;
- **reordered** events: an event's hash only matches at another position (two swapped
  events are named together, also when only their contents were exchanged);
- an **inserted** event: one the chain does not need (an extra link beside a real one, an
  event added after the run's final hash, a row without a hash between linked neighbours);
- an **unhashed** event: no hash at all, either written before the audit trail existed or
  with its hash removed;
- a **truncated** run: its final hash matches no event (events at the end were deleted).

How positions are found: every event that verifies at its current ``seq`` is an anchor;
from the anchors, the links (``prev_hash`` → ``hash``) give the written position of their
neighbours, also of edited ones (their links still hold). A stretch that has no anchor (all
renumbered) is placed by trying, for its events, the positions nearest to their ``seq``,
within :data:`SEARCH_BUDGET` hash computations. Deleting, inserting and renumbering keep
the order of what is left, so events outside the longest increasing run of positions (in
seq order) are the ones that moved.
"""

from __future__ import annotations

import bisect
import json
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from agentos.store import queries
from agentos.store.db import Store

AuditProblemKind = Literal[
    "edited",
    "deleted",
    "reordered",
    "inserted",
    "unhashed",
    "truncated",
    "output_edited",
    "output_deleted",
    "output_inserted",
    "output_unhashed",
    "output_unsealed",
    "keyed",
    "wrong_key",
    "unkeyed",
]

SEARCH_BUDGET = 50_000
"""Most hash computations spent placing events that no anchor reaches (well under a
second); events still unplaced after it are reported as edited."""

_MAX_CONTENT_SWAP_CANDIDATES = 64


@dataclass(frozen=True, slots=True)
class AuditProblem:
    """One thing in a run's record that does not fit its hash chain."""

    seq: int | None
    """The event concerned, numbered as written where known (for a deleted event, the
    missing number); None for the run as a whole."""
    kind: AuditProblemKind
    detail: str
    """A sentence for the user, naming the event(s): "event 7 (answer) was edited"."""
    table: str | None = None
    """For an output: its table (``results``, ``llm_calls``, ``tool_calls``)."""
    row: str | None = None
    """For an output: the row's id."""
    fields: tuple[str, ...] = ()
    """For an edited output: the fields that no longer match what was recorded."""


@dataclass(slots=True, eq=False)
class ChainEvent:
    """One stored event, and what the check learns about it."""

    seq: int
    type: str
    time: float
    payload: Any
    """The decoded stored payload; :data:`UNREADABLE` when it is not JSON."""
    prev_hash: str | None
    hash: str | None
    position: int | None = None
    """The seq this event was written with, as the chain tells it."""
    intact: bool = False
    """Its hash matches its content at ``position``."""
    inserted: bool = False

    @property
    def hashed(self) -> bool:
        return self.hash is not None and self.prev_hash is not None

    @property
    def number(self) -> int:
        """The number it was written with where known, else the one it is stored under."""
        return self.position if self.position is not None else self.seq

    @property
    def label(self) -> str:
        if self.position is None or self.position == self.seq:
            return f"event {self.seq} ({self.type})"
        return f"event {self.position} ({self.type}, stored as event {self.seq})"


UNREADABLE = object()
"""The payload of an event whose stored payload is not JSON."""


def load_chain(store: Store, run_id: str) -> list[ChainEvent]:
    """The events of ``run_id`` in seq order, payloads decoded."""
    cursor = store.db.conn.execute(
        "SELECT seq, type, time, payload, prev_hash, hash FROM events WHERE run_id = ? "
        "ORDER BY seq",
        (run_id,),
    )
    events = []
    for seq, type_, time_, payload, prev_hash, hash_ in cursor.fetchall():
        try:
            decoded = json.loads(payload) if isinstance(payload, str) else UNREADABLE
        except ValueError:
            decoded = UNREADABLE
        events.append(ChainEvent(seq, type_, time_, decoded, prev_hash, hash_))
    return events


class ChainCheck:
    """One check of one run that has at least one hashed event (or a final hash).

    ``status`` and ``final_hash`` are the run's; ``before_audit_trail`` says whether it
    started before the migration that added the hashes; ``key`` is the audit key its
    links are HMACs with (None: plain SHA-256). :meth:`problems` runs it.
    """

    def __init__(
        self,
        run_id: str,
        events: list[ChainEvent],
        *,
        final_hash: str | None,
        status: str,
        before_audit_trail: bool,
        key: bytes | None = None,
    ) -> None:
        self.run_id = run_id
        self.key = key
        self.events = events
        self.hashed = [e for e in events if e.hashed]
        self.final_hash = final_hash
        self.status = status
        self.before_audit_trail = before_audit_trail
        self.found: list[AuditProblem] = []
        self.genesis = queries.genesis_hash(run_id, key=key)
        self.by_hash: dict[str, ChainEvent] = {}
        self.children: dict[str, list[ChainEvent]] = defaultdict(list)
        for event in self.hashed:
            assert event.hash is not None and event.prev_hash is not None
            self.by_hash.setdefault(event.hash, event)
            self.children[event.prev_hash].append(event)
        self.linked_hashes = {e.prev_hash for e in self.hashed} | {final_hash}
        self.index = {id(e): i for i, e in enumerate(events)}
        self.unhashed_inserted: set[int] = set()
        """Seqs of events without a hash that the chain does not need."""

    def problem(self, seq: int | None, kind: AuditProblemKind, detail: str) -> None:
        self.found.append(AuditProblem(seq, kind, detail))

    def verifies(self, event: ChainEvent, seq: int, *, content: ChainEvent | None = None) -> bool:
        """Whether ``event``'s hash is that of ``content`` (default: its own) at ``seq``."""
        source = content or event
        if source.payload is UNREADABLE or event.prev_hash is None:
            return False
        expected = queries.event_hash(
            event.prev_hash,
            run_id=self.run_id,
            seq=seq,
            type=source.type,
            time=source.time,
            payload=source.payload,
            key=self.key,
        )
        return expected == event.hash

    def problems(self) -> list[AuditProblem]:
        """Everything that does not fit, in the order of the events concerned."""
        self.place_events()
        self.find_duplicates()
        self.check_end_of_chain()
        self.report_edited_and_inserted()
        self.report_broken_links()
        self.report_unhashed()
        self.report_missing()
        self.report_reordered()
        return sorted(self.found, key=lambda p: p.seq if p.seq is not None else 0)

    # -- placing every hashed event at the position it was written with ---------------

    def place_events(self) -> None:
        anchors: deque[ChainEvent] = deque()
        for event in self.hashed:
            if self.verifies(event, event.seq):
                event.position, event.intact = event.seq, True
                anchors.append(event)
        self.follow_links(anchors)
        if not any(e.position == 1 for e in self.hashed):
            for event in self.hashed:
                if event.position is None and event.prev_hash == self.genesis:
                    event.position, event.intact = 1, self.verifies(event, 1)
                    self.follow_links(deque([event]))
                    break
        self.search_positions()
        self.guess_linked_positions()

    def search_positions(self) -> None:
        """Place events no link reaches by trying positions at growing distance from their
        seq, one distance for all of them at a time, so a renumbered stretch is found at
        its offset even when its first event was edited too."""
        budget = SEARCH_BUDGET
        limit = max((e.seq for e in self.events), default=0) + max(len(self.events), 1000)
        pending = [e for e in self.hashed if e.position is None]
        distance = 1
        while pending and budget > 0 and distance <= limit:
            for event in pending:
                if event.position is not None:
                    continue
                for seq in (event.seq + distance, event.seq - distance):
                    if not 1 <= seq <= limit or budget <= 0:
                        continue
                    budget -= 1
                    if self.verifies(event, seq):
                        event.position, event.intact = seq, True
                        self.follow_links(deque([event]))
                        break
            pending = [e for e in pending if e.position is None]
            distance += 1

    def guess_linked_positions(self) -> None:
        """Stretches of linked events that match their hashes nowhere (all edited): placed
        at their stored numbers, so they are reported as edited, not as missing."""
        for event in self.hashed:
            if event.position is None and (
                self.children[event.hash or ""] or event.prev_hash in self.by_hash
            ):
                event.position, event.intact = event.seq, False
                self.follow_links(deque([event]))

    def follow_links(self, queue: deque[ChainEvent]) -> None:
        """Give the unplaced neighbours (by link) of placed events their positions."""
        while queue:
            event = queue.popleft()
            assert event.position is not None and event.hash is not None
            neighbours = [(child, event.position + 1) for child in self.children[event.hash]]
            parent = self.by_hash.get(event.prev_hash or "")
            if parent is not None:
                neighbours.append((parent, event.position - 1))
            for neighbour, position in neighbours:
                if neighbour.position is None and position >= 1:
                    neighbour.position = position
                    neighbour.intact = self.verifies(neighbour, position)
                    queue.append(neighbour)

    def find_duplicates(self) -> None:
        """Two events at one position: the one the chain goes on from is the real one."""
        by_position: dict[int, list[ChainEvent]] = defaultdict(list)
        for event in self.hashed:
            if event.position is not None:
                by_position[event.position].append(event)
        for position, claimants in by_position.items():
            if len(claimants) < 2:
                continue
            real = [e for e in claimants if e.hash in self.linked_hashes and e.intact]
            keep = (
                real[0]
                if len(real) == 1
                else min(claimants, key=lambda e: (not e.intact, e.seq != position, e.seq))
            )
            for event in claimants:
                if event is not keep:
                    self.mark_inserted(event, "it is not part of the recorded chain")

    def mark_inserted(self, event: ChainEvent, why: str) -> None:
        event.inserted = True
        event.position = None
        self.problem(event.seq, "inserted", f"{event.label} was inserted: {why}")

    # -- the end of the chain ---------------------------------------------------------

    def check_end_of_chain(self) -> None:
        if self.status in ("running", "crashed"):
            return  # never anchored: its process is still writing, or died before
        if self.final_hash is None:
            self.problem(
                None,
                "truncated",
                "the run finished but its final hash is missing, so events at its end may "
                "have been deleted",
            )
            return
        if self.final_hash == self.genesis:
            end_position = 0
        elif (anchor := self.by_hash.get(self.final_hash)) is not None and (
            anchor.position is not None
        ):
            end_position = anchor.position
        else:
            self.report_truncated()
            return
        for event in self.placed():
            if event.position is not None and event.position > end_position:
                self.mark_inserted(event, "it was added after the run finished")

    def report_truncated(self) -> None:
        placed = self.placed()
        if self.events and not self.events[-1].hashed:
            return  # its removed hash may be the final one; report_unhashed names it
        if not placed:
            self.problem(
                1, "truncated", "all of the run's events are missing (its final hash matches none)"
            )
            return
        last = max(placed, key=lambda e: e.position or 0)
        self.problem(
            last.number + 1,
            "truncated",
            f"events after {last.number} are missing, or {last.label} was rewritten "
            "(the run's final hash does not match)",
        )

    # -- per-event findings -----------------------------------------------------------

    def placed(self) -> list[ChainEvent]:
        return [e for e in self.hashed if e.position is not None and not e.inserted]

    def report_edited_and_inserted(self) -> None:
        edited = [e for e in self.placed() if not e.intact]
        for event in self.hashed:
            if event.position is None and not event.inserted:
                if self.neighbours_link_past(event):
                    self.mark_inserted(event, "its neighbours link to each other without it")
                else:
                    self.problem(
                        event.number,
                        "edited",
                        f"{event.label} was edited: it matches its hash at no position",
                    )
        swapped = self.content_swaps(edited)
        for event in edited:
            if event not in swapped:
                self.problem(
                    event.number,
                    "edited",
                    f"{event.label} was edited: its content no longer matches its hash",
                )

    def content_swaps(self, edited: list[ChainEvent]) -> set[ChainEvent]:
        """Pairs of edited events whose contents were exchanged (hashes left in place)."""
        found: set[ChainEvent] = set()
        if len(edited) > _MAX_CONTENT_SWAP_CANDIDATES:
            return found
        for i, first in enumerate(edited):
            for second in edited[i + 1 :]:
                if first in found or second in found:
                    continue
                assert first.position is not None and second.position is not None
                if self.verifies(first, first.position, content=second) and self.verifies(
                    second, second.position, content=first
                ):
                    found |= {first, second}
                    self.problem(
                        first.number,
                        "reordered",
                        f"events {first.number} ({second.type}) and {second.number} "
                        f"({first.type}) "
                        "were swapped (their contents were exchanged)",
                    )
        return found

    def neighbours_link_past(self, event: ChainEvent) -> bool:
        """Whether the nearest chained events before and after ``event`` (by seq) link to
        each other directly, so the chain does not need ``event``."""
        index = self.index[id(event)]
        before = next(self.chained(range(index - 1, -1, -1)), None)
        after = next(self.chained(range(index + 1, len(self.events))), None)
        prev_hash = before.hash if before is not None else self.genesis
        if after is not None:
            return after.prev_hash == prev_hash
        return self.final_hash is not None and self.final_hash == prev_hash

    def chained(self, indexes: range) -> Iterator[ChainEvent]:
        for i in indexes:
            event = self.events[i]
            if event.hashed and not event.inserted:
                yield event

    def report_broken_links(self) -> None:
        """Consecutive positions whose link does not hold: one of them was re-hashed."""
        at = {e.position: e for e in self.placed()}
        unhashed_seqs = {e.seq for e in self.events if not e.hashed}
        for position, event in sorted(at.items(), key=lambda item: item[0] or 0):
            assert position is not None
            if not event.intact:
                continue
            if position == 1:
                if event.prev_hash != self.genesis:
                    self.problem(
                        event.number,
                        "edited",
                        f"{event.label} was rewritten: it does not start the run's chain",
                    )
                continue
            previous = at.get(position - 1)
            if previous is None or not previous.intact:
                continue  # missing or edited: reported on its own
            if event.prev_hash == previous.hash:
                continue
            if event.prev_hash == self.genesis and position - 1 in unhashed_seqs:
                continue  # a chain started after events from before the audit trail
            self.problem(
                previous.number,
                "edited",
                f"the chain breaks between {previous.label} and {event.label}: one of them "
                "was rewritten with a new hash",
            )

    def report_missing(self) -> None:
        occupied = {e.position for e in self.placed()} | {
            e.seq for e in self.events if not e.hashed and e.seq not in self.unhashed_inserted
        }
        highest = max((p for p in occupied if p is not None), default=0)
        missing = [p for p in range(1, highest + 1) if p not in occupied]
        at = {e.position: e for e in self.placed()}
        for first, last in _ranges(missing):
            after = at.get(last + 1)
            hidden = after is not None and after.seq <= last
            hint = " (later events were renumbered to hide the gap)" if hidden else ""
            if first == last:
                self.problem(first, "deleted", f"event {first} is missing{hint}")
            else:
                self.problem(first, "deleted", f"events {first}–{last} are missing{hint}")

    def report_reordered(self) -> None:
        """Events whose written order disagrees with their stored order.

        Deleting, inserting and renumbering keep the order, so the events in the longest
        run of increasing positions (taken in seq order) are in place; the others moved.
        """
        placed = sorted(self.placed(), key=lambda e: e.seq)
        kept = _longest_increasing([e.position or 0 for e in placed])
        by_seq = {e.seq: e for e in placed}
        by_position = {e.position: e for e in placed}
        reported: set[int] = set()
        for i, event in enumerate(placed):
            if i in kept or event.seq in reported:
                continue
            assert event.position is not None
            partner = by_seq.get(event.position)
            if partner is not None and partner.position == event.seq:
                first, second = sorted((event.seq, event.position))
                reported |= {first, second}
                self.problem(
                    first,
                    "reordered",
                    f"events {first} ({by_position[first].type}) and {second} "
                    f"({by_position[second].type}) were swapped: event {first} is stored as "
                    f"{second} and event {second} as {first}",
                )
            else:
                self.problem(
                    event.position,
                    "reordered",
                    f"event {event.position} ({event.type}) was moved: it is stored as "
                    f"event {event.seq}",
                )

    # -- events without a hash in a hashed run ----------------------------------------

    def report_unhashed(self) -> None:
        """Events without a hash: a prefix from before the audit trail, events the chain
        does not need (inserted), or events whose hash was removed."""
        unhashed = [e for e in self.events if not e.hashed]
        if not unhashed:
            return
        first_hashed = min((e.seq for e in self.hashed), default=0)
        prefix = [e for e in unhashed if e.seq < first_hashed]
        if self.before_audit_trail and prefix:
            self.problem(
                prefix[0].seq,
                "unhashed",
                f"{_subject(prefix)} {_verb(prefix, 'was', 'were')} recorded before the "
                "audit trail existed and cannot be verified",
            )
            unhashed = [e for e in unhashed if e.seq >= first_hashed]
        stripped: list[ChainEvent] = []
        for event in unhashed:
            if self.neighbours_link_past(event):
                self.unhashed_inserted.add(event.seq)
                self.problem(
                    event.seq,
                    "inserted",
                    f"{event.label} was inserted: it has no hash and its neighbours link to "
                    "each other without it",
                )
            else:
                stripped.append(event)
        for group in _consecutive(stripped):
            self.problem(
                group[0].seq,
                "unhashed",
                f"{_subject(group)} {_verb(group, 'has', 'have')} no hash (removed, or "
                "written by an agentos without the audit trail) and cannot be verified",
            )


def _consecutive(events: list[ChainEvent]) -> list[list[ChainEvent]]:
    groups: list[list[ChainEvent]] = []
    for event in events:
        if groups and groups[-1][-1].seq == event.seq - 1:
            groups[-1].append(event)
        else:
            groups.append([event])
    return groups


def _longest_increasing(values: list[int]) -> set[int]:
    """Indexes of one longest strictly increasing subsequence of ``values`` (n log n)."""
    tails: list[int] = []  # tails[k]: index ending the best increasing run of length k+1
    tail_values: list[int] = []
    previous: list[int] = [-1] * len(values)
    for i, value in enumerate(values):
        k = bisect.bisect_left(tail_values, value)
        if k > 0:
            previous[i] = tails[k - 1]
        if k == len(tails):
            tails.append(i)
            tail_values.append(value)
        else:
            tails[k] = i
            tail_values[k] = value
    kept: set[int] = set()
    i = tails[-1] if tails else -1
    while i >= 0:
        kept.add(i)
        i = previous[i]
    return kept


def _ranges(numbers: list[int]) -> list[tuple[int, int]]:
    """Sorted numbers as (first, last) runs of consecutive values."""
    ranges: list[tuple[int, int]] = []
    for number in numbers:
        if ranges and ranges[-1][1] == number - 1:
            ranges[-1] = (ranges[-1][0], number)
        else:
            ranges.append((number, number))
    return ranges


def _subject(events: list[ChainEvent]) -> str:
    if len(events) == 1:
        return events[0].label
    return f"events {events[0].seq}–{events[-1].seq}"


def _verb(events: list[ChainEvent], singular: str, plural: str) -> str:
    return singular if len(events) == 1 else plural
