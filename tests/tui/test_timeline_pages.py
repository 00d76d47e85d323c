"""A long run's timeline: read a page at a time, repeated prompts folded."""

from __future__ import annotations

import json
from datetime import UTC
from pathlib import Path

from textual.widgets import Static

from agentos.store import Store
from agentos.store.writer import Execute, Insert
from agentos.tui.app import TopApp
from agentos.tui.timeline import TimelineScreen
from agentos.tui.timeline_data import PAGE_EVENTS, Timeline, read_timeline
from tests.tui.bigrun import BIG_RUN, PROMPT, START, write_big_run
from tests.tui.conftest import FakeClock, settle, text_of

EVENTS = 2_000
ATTEMPTS = (EVENTS - 2) // 3
"""write_big_run's attempts: a request, an answer and a parse each."""


def pages(db_path: Path, limit: int | None) -> list[Timeline]:
    with Store(db_path, readonly=True) as store:
        out = [read_timeline(store, BIG_RUN, limit=limit)]
        while out[-1] is not None and out[-1].more:
            out.append(read_timeline(store, BIG_RUN, after=out[-1], limit=limit))
    assert all(t is not None for t in out)
    return [t for t in out if t is not None]


def test_the_pages_together_are_the_whole_timeline(tmp_path: Path) -> None:
    db = tmp_path / "agentos.db"
    write_big_run(db, EVENTS)
    paged = pages(db, PAGE_EVENTS)
    (whole,) = pages(db, None)
    entries = [e for page in paged for e in page.entries]
    steps = [e.step for e in entries if e.step is not None]
    failed = [e for e in entries if e.kind == "call_failed"]
    last = paged[-1]
    assert len(paged) == -(-(ATTEMPTS * 3 + 2) // PAGE_EVENTS)  # ceil: 10 pages
    assert all(len([e for e in p.entries if e.step]) == PAGE_EVENTS for p in paged[:-1])
    assert entries == list(whole.entries)
    assert steps == list(range(1, ATTEMPTS * 3 + 3))
    assert len(failed) == ATTEMPTS // 10  # every tenth attempt, each on the page of its time
    assert (last.calls, last.failed_calls, last.events) == (
        ATTEMPTS + ATTEMPTS // 10,
        ATTEMPTS // 10,
        ATTEMPTS * 3 + 2,
    )
    assert last.tokens == ATTEMPTS * 412


def test_a_repeated_prompt_is_folded_to_the_step_that_shows_it(tmp_path: Path) -> None:
    db = tmp_path / "agentos.db"
    write_big_run(db, EVENTS)
    paged = pages(db, PAGE_EVENTS)
    requests = [e for page in paged for e in page.entries if e.kind == "request"]
    first, *others = requests
    assert first.step == 2
    assert PROMPT in first.body
    assert len(others) == ATTEMPTS - 1
    assert {e.body for e in others} == {"same prompt as step 2"}  # also on later pages


def test_a_changed_prompt_is_shown_and_later_repeats_point_at_it(tmp_path: Path) -> None:
    db = tmp_path / "agentos.db"
    write_big_run(db, 20)
    changed = [{"role": "user", "content": "Something else entirely."}]
    with Store(db) as store:  # the third attempt's request (seq 8) asks something else
        store.submit(
            Execute(
                "UPDATE events SET payload = ? WHERE run_id = ? AND seq = 8",
                [json.dumps({"attempt": 3, "turn": 0, "messages": changed}), BIG_RUN],
            )
        )
        store.submit(
            Insert(
                "events",
                {
                    "run_id": BIG_RUN,
                    "seq": 100,
                    "type": "request",
                    "time": START + 99,
                    "payload": json.dumps({"attempt": 9, "turn": 0, "messages": changed}),
                },
            )
        )
    (whole,) = pages(db, None)
    bodies = [(e.step, e.body) for e in whole.entries if e.kind == "request"]
    assert bodies[1] == (5, "same prompt as step 2")
    assert bodies[2] == (8, "user: Something else entirely.")
    assert bodies[3][0] == 11 and PROMPT in bodies[3][1]  # back to the first: shown again
    assert bodies[4] == (14, "same prompt as step 11")
    assert bodies[-1] == (100, "user: Something else entirely.")


async def test_a_long_run_opens_with_one_page_and_reads_more_as_asked(tmp_path: Path) -> None:
    db = tmp_path / "agentos.db"
    write_big_run(db, EVENTS)
    app = TopApp(db, clock=FakeClock(START + 2000), tz=UTC, refresh_s=None)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        screen = TimelineScreen(db, BIG_RUN, clock=app.clock, tz=UTC, refresh_s=None)
        await app.push_screen(screen)
        await settle(pilot)
        opened = (screen.shown, screen.pages)
        head = " ".join(text_of(screen.query_one("#timeline-head", Static)).split())
        body = text_of(screen.query_one("#timeline-body", Static))
        await pilot.press("m")
        await settle(pilot)
        after_m = screen.shown
        await pilot.press("end")  # scrolled to the end of what is shown: the next page
        await settle(pilot)
        after_end = screen.shown
    assert opened == (PAGE_EVENTS, 1)
    assert f"events {PAGE_EVENTS} of {EVENTS:,} shown" in head
    assert body.count("Extract every date from") == 1
    assert body.count("same prompt as step 2") == len(range(2, PAGE_EVENTS + 1, 3)) - 1
    assert after_m == 2 * PAGE_EVENTS
    assert after_end == 3 * PAGE_EVENTS


async def test_a_live_runs_timeline_grows_page_by_page(tmp_path: Path) -> None:
    db = tmp_path / "agentos.db"
    write_big_run(db, 8)
    with Store(db) as store:
        store.submit(Execute("UPDATE runs SET status = 'running' WHERE id = ?", [BIG_RUN]))
    app = TopApp(db, clock=FakeClock(START + 10), tz=UTC, refresh_s=None)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        screen = TimelineScreen(db, BIG_RUN, clock=app.clock, tz=UTC, refresh_s=None)
        await app.push_screen(screen)
        await settle(pilot)
        before = screen.shown
        with Store(db) as store:
            for seq in (9, 10):
                row = {"run_id": BIG_RUN, "seq": seq, "type": "note", "time": START + seq}
                store.submit(Insert("events", {**row, "payload": json.dumps({"n": seq})}))
        screen.reload()
        await settle(pilot)
        after = (screen.shown, screen.pages)
        text = " ".join(text_of(w) for w in screen.query(".timeline-page").results(Static))
    assert before == 8
    assert after == (10, 2)
    assert '"n": 10' in text
