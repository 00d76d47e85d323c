"""Sorting, filtering and grouping the dashboard's tables, with keys pressed as a user
would, and the rows compared with the database (or the snapshot) they come from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentos.store import Store
from agentos.tui.app import TopApp
from agentos.tui.rows import RunGroup
from agentos.tui.runs import RunsTable
from agentos.tui.timeline import TimelineScreen
from tests.tui.conftest import FakeClock, make_app, reload, settle
from tests.tui.seed import NOW, R0, R1, R2, R3, RUNTIME_A, SNAPSHOT_A


def insert_runs(db_path: Path, rows: list[dict[str, Any]]) -> None:
    """``runs`` rows as ``agentos run`` writes them (in one transaction, for speed)."""
    base = {"kind": "prompt", "wanted": 1, "attempts": 1, "spec": "{}", "pid": 4242}
    with Store(db_path) as store, store.db.conn:
        store.db.table("runs").insert_all([{**base, **row} for row in rows])


def perpetual(
    agent: str, count: int, start: float, *, status: str = "succeeded", every: float = 2.0
) -> list[dict[str, Any]]:
    """``count`` runs of a perpetual agent, one every ``every`` seconds from ``start``."""
    return [
        {
            "id": f"{agent}-{i:05d}",
            "agent": agent,
            "status": status,
            "started_at": start + i * every,
            "finished_at": start + i * every + 1.5,
            "successes": 1 if status == "succeeded" else 0,
        }
        for i in range(count)
    ]


def db_ids(db_path: Path, sql: str, params: list[Any] | None = None) -> list[str]:
    with Store(db_path, readonly=True) as store:
        return [row["id"] for row in store.db.query(sql, params or [])]


def row_keys(table: RunsTable | Any) -> list[str]:
    return [str(row.key.value) for row in table.ordered_rows]


def header_labels(table: Any) -> list[str]:
    return [str(column.label) for column in table.columns.values()]


def header_offset(table: Any, key: str) -> tuple[int, int]:
    """Where to click on the header of column ``key`` (the header is the table's
    first line under its border)."""
    x = 0
    for column in table.columns.values():
        if column.key.value == key:
            return (x + 1, 1)
        x += column.get_render_width(table)
    raise AssertionError(f"no column {key}")


# -- sorting -----------------------------------------------------------------------------


async def test_sort_keys_and_header_clicks_sort_the_processes(seeded_db: Path) -> None:
    app = make_app(seeded_db)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        table = app.processes
        natural = row_keys(table)
        await pilot.press("greater_than_sign")  # the first column: name, A to Z
        by_name = (row_keys(table), header_labels(table)[0])
        await pilot.press("I")  # reversed
        by_name_reversed = (row_keys(table), header_labels(table)[0])
        reqs = header_offset(table, "requests")
        await pilot.click(table, offset=reqs)
        await pilot.pause()
        by_requests = (row_keys(table), header_labels(table)[5])
        await pilot.click(table, offset=header_offset(table, "requests"))
        await pilot.pause()
        by_requests_up = row_keys(table)
        await pilot.press("less_than_sign", "less_than_sign", "less_than_sign")
        await pilot.press("less_than_sign", "less_than_sign", "less_than_sign")
        back_to_natural = (row_keys(table), header_labels(table))
    processes = SNAPSHOT_A["processes"]
    names = sorted(p["name"] for p in processes)
    assert natural == [f"{RUNTIME_A}/{p['name']}" for p in processes]
    assert by_name == ([f"{RUNTIME_A}/{n}" for n in names], "name ▲")
    assert by_name_reversed == ([f"{RUNTIME_A}/{n}" for n in reversed(names)], "name ▼")
    most = sorted(processes, key=lambda p: -p["requests"])  # stable: ties keep their order
    assert by_requests == ([f"{RUNTIME_A}/{p['name']}" for p in most], "reqs ▼")
    least = sorted(processes, key=lambda p: p["requests"])
    assert by_requests_up == [f"{RUNTIME_A}/{p['name']}" for p in least]
    assert back_to_natural == (natural, [label for _, label in app.processes.COLUMNS])


async def test_sorting_the_runs_asks_the_database_and_stops_following(
    seeded_db: Path, clock: FakeClock
) -> None:
    """Sorted by how long runs took, the longest come first however old; under that sort
    the table keeps the row the user picked even with the focus elsewhere (following the
    newest only makes sense newest first)."""
    newer = perpetual("ticker", 80, NOW - 3600, every=3.0)
    for i, run in enumerate(newer):
        run["agent"] = f"ticker-{i % 2}"  # taking turns: nothing to group
    insert_runs(seeded_db, newer)
    insert_runs(
        seeded_db,
        [{"id": "slow-old", "agent": "crawl", "status": "succeeded", "started_at": NOW - 7200,
          "finished_at": NOW - 7200 + 900.0, "successes": 1}],
    )  # fmt: skip
    app = make_app(seeded_db, clock)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        table = app.runs
        newest_first = row_keys(table)
        table.focus()
        await pilot.press("greater_than_sign")  # from started ▼ to took ▼
        await settle(pilot)
        by_took = row_keys(table)
        labels = header_labels(table)
        table.move_cursor(row=3)
        await settle(pilot)
        picked = table.selected_key
        app.processes.focus()
        insert_runs(seeded_db, perpetual("fresh", 5, NOW - 1, every=0.01))
        await reload(pilot)
        kept = (table.selected_key, table.cursor_row)
    took = "COALESCE(finished_at, ?) - started_at"
    expected = db_ids(
        seeded_db,
        f"SELECT id FROM runs WHERE agent != 'fresh' ORDER BY {took} DESC, started_at DESC",
        [NOW],
    )
    assert "slow-old" not in newest_first  # older than the page, newest first
    assert by_took[0] == "slow-old"
    assert by_took == expected[:50]
    assert "took ▼" in labels and "started" in labels
    assert picked is not None and kept[0] == picked


async def test_runs_table_sorted_by_a_column_lists_the_database_order(seeded_db: Path) -> None:
    """Ungrouped (g), sorted by tries: exactly the database's order, beyond the newest."""
    insert_runs(
        seeded_db,
        [{"id": f"x-{i:03d}", "agent": f"agent-{i % 7}", "status": "succeeded",
          "started_at": NOW - 5000 + i, "finished_at": NOW - 4990 + i, "attempts": i % 11}
         for i in range(120)],
    )  # fmt: skip
    app = make_app(seeded_db)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        app.runs.focus()
        await pilot.press("g")
        await settle(pilot)
        for _ in range(3):  # started ▼ → attempts ▼ → good ▼ → status ▲
            await pilot.press("less_than_sign")
        await pilot.press("greater_than_sign", "greater_than_sign")  # → attempts ▼
        await settle(pilot)
        shown = row_keys(app.runs)
        label = header_labels(app.runs)[3]
    expected = db_ids(
        seeded_db, "SELECT id FROM runs ORDER BY attempts DESC, started_at DESC, id DESC LIMIT 50"
    )
    assert label == "tries ▼"
    assert shown == expected


# -- filtering ---------------------------------------------------------------------------


async def test_filtering_the_runs_finds_failed_runs_beyond_the_latest_page(
    seeded_db: Path,
) -> None:
    # 60 newer runs of two agents taking turns (nothing to group), two older failures
    insert_runs(
        seeded_db,
        [{"id": f"n-{i:03d}", "agent": f"fetch-{i % 2}", "status": "succeeded",
          "started_at": NOW - 5 + i * 0.01, "finished_at": NOW - 4 + i * 0.01}
         for i in range(60)]
        + [{"id": f"old-fail-{i}", "agent": "report", "status": "failed",
            "started_at": NOW - 9000 - i, "finished_at": NOW - 8990 - i} for i in range(2)],
    )  # fmt: skip
    app = make_app(seeded_db)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        table = app.runs
        unfiltered = row_keys(table)
        table.focus()
        await pilot.press("slash", *"failed")
        await settle(pilot)
        failed = row_keys(table)
        title_typing = str(table.border_title)
        await pilot.press("enter")
        await settle(pilot)
        focus_after_enter = app.focused
        await pilot.press("slash")
        await pilot.press(*["backspace"] * 6, *"FETCH-1")
        await settle(pilot)
        fetch = row_keys(table)
        fetch_group = table.groups.get("group:n-001")
        await pilot.press("escape")  # in the filter line: clears it
        await settle(pilot)
        cleared = (row_keys(table), str(table.border_title), app.focused)
    assert R3 not in unfiltered and "old-fail-0" not in unfiltered
    assert failed == db_ids(seeded_db, "SELECT id FROM runs WHERE status = 'failed' "
                            "ORDER BY started_at DESC")  # fmt: skip
    assert failed == [R3, "old-fail-0", "old-fail-1"]
    assert title_typing == "recent runs · filter /failed"
    assert focus_after_enter is table
    # filtered to one agent, its runs are consecutive: one group of them all
    fetch_ids = db_ids(seeded_db, "SELECT id FROM runs WHERE agent = 'fetch-1'")
    assert fetch == ["group:n-001"]
    assert fetch_group is not None and fetch_group.count == len(fetch_ids) == 30
    assert cleared == (unfiltered, "recent runs", table)


async def test_filtering_the_processes_and_escape_on_the_table_clears_it(
    seeded_db: Path,
) -> None:
    app = make_app(seeded_db)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        table = app.processes
        await pilot.press("slash", *"news", "enter")
        await pilot.pause()
        news = (row_keys(table), str(table.border_title))
        await pilot.press("slash", *["backspace"] * 4, *"system", "enter")
        await pilot.pause()
        system = row_keys(table)
        await pilot.press("escape")
        await pilot.pause()
        cleared = (len(row_keys(table)), str(table.border_title))
    processes = SNAPSHOT_A["processes"]
    assert news == ([f"{RUNTIME_A}/summarize-news"], "processes · filter /news")
    assert system == [f"{RUNTIME_A}/{p['name']}" for p in processes if p.get("kind") == "system"]
    assert system
    assert cleared == (len(processes), "processes")


# -- grouping ----------------------------------------------------------------------------


async def test_a_perpetual_agents_runs_are_one_row_that_expands(
    seeded_db: Path, clock: FakeClock
) -> None:
    insert_runs(seeded_db, perpetual("ticker", 1160, NOW - 2400))
    insert_runs(
        seeded_db,
        [{"id": "ticker-now", "agent": "ticker", "status": "running", "started_at": NOW - 80}],
    )
    app = make_app(seeded_db, clock)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        table = app.runs
        keys = row_keys(table)
        group_key = "group:ticker-00000"
        group = table.groups[group_key]
        cells = [str(c) for c in table.get_row(group_key)]
        table.focus()
        table.move_cursor(row=keys.index(group_key))
        await pilot.press("space")
        await settle(pilot)
        expanded = row_keys(table)
        member = [str(c) for c in table.get_row("ticker-01159")]
        await pilot.press("space")  # on the group's row still: folds it
        await settle(pilot)
        folded = row_keys(table)

        # the running run ends and joins the group: the cursor stays on the group's row
        with Store(seeded_db) as store, store.db.conn:
            store.db.execute(
                "UPDATE runs SET status = 'succeeded', finished_at = ? WHERE id = 'ticker-now'",
                [NOW],
            )
        clock.now = NOW + 1
        await reload(pilot)
        grown = (table.selected_key, table.groups[group_key].count)
        await pilot.press("enter")
        await settle(pilot)
        opened = app.screen
    # everything else is no longer buried; the running run is not folded in
    assert keys == [R2, R3, R1, "ticker-now", group_key, R0]
    assert isinstance(group, RunGroup)
    assert (group.agent, group.status, group.count) == ("ticker", "succeeded", 1160)
    assert cells[:4] == ["▸ ticker ×1,160", "succeeded", "1,160/1,160", "1,160"]
    assert cells[4] == "07:24:43–08:03:21"  # NOW - 2400 … NOW - 2400 + 1159 × 2 s
    assert cells[-1] == "ticker-01159"  # the latest run, what enter opens
    assert expanded[4:7] == [group_key, "ticker-01159", "ticker-01158"]
    # shown whole, it fills the page: R0 comes after it
    assert expanded[-1] == "ticker-00000" and len(expanded) == len(keys) - 1 + 1160
    assert member[0] == "│ ticker"
    assert folded == keys
    assert grown == (group_key, 1161)
    assert isinstance(opened, TimelineScreen) and opened.run_id == "ticker-now"


async def test_g_turns_grouping_off_and_on(seeded_db: Path) -> None:
    insert_runs(seeded_db, perpetual("ticker", 200, NOW - 1000))
    app = make_app(seeded_db)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        grouped = row_keys(app.runs)
        app.runs.focus()
        await pilot.press("g")
        await settle(pilot)
        flat = row_keys(app.runs)
        await pilot.press("g")
        await settle(pilot)
        again = row_keys(app.runs)
        await pilot.press("greater_than_sign")  # by took: alike by chance, not grouped
        await settle(pilot)
        by_took = row_keys(app.runs)
    took = "COALESCE(finished_at, ?) - started_at"
    assert by_took == db_ids(
        seeded_db, f"SELECT id FROM runs ORDER BY {took} DESC, started_at DESC LIMIT 50", [NOW]
    )
    assert grouped == [R2, R3, R1, "group:ticker-00000", R0]
    assert flat == db_ids(seeded_db, "SELECT id FROM runs ORDER BY started_at DESC LIMIT 50")
    assert again == grouped


async def test_two_alike_in_a_row_stay_two_rows(seeded_db: Path) -> None:
    """R0 and R1 are both succeeded runs of capital-cities: folding two saves one line."""
    app = make_app(seeded_db)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        keys = row_keys(app.runs)
    assert keys == db_ids(seeded_db, "SELECT id FROM runs ORDER BY started_at DESC")


# -- the cluster's node ------------------------------------------------------------------


async def test_a_node_column_shows_when_runs_record_their_node(seeded_db: Path) -> None:
    app = make_app(seeded_db)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        before = header_labels(app.runs)
        await reload(pilot)  # runs.node (m016) is there, but no run recorded a node yet
        none_yet = header_labels(app.runs)
        with Store(seeded_db) as store, store.db.conn:
            store.db.execute("UPDATE runs SET node = 'a1b2c3' WHERE id = ?", [R2])
        await reload(pilot)
        after = header_labels(app.runs)
        r2 = [str(c) for c in app.runs.get_row(R2)]
        r1 = [str(c) for c in app.runs.get_row(R1)]
    assert "node" not in before and "node" not in none_yet
    assert after[-2:] == ["node", "id"]
    assert r2[-2:] == ["a1b2c3", R2]
    assert r1[-2] == "-"


async def test_sort_and_filter_do_nothing_over_a_timeline(seeded_db: Path) -> None:
    app: TopApp = make_app(seeded_db)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.runs.focus()
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("greater_than_sign", "slash", *"xyz")
        await settle(pilot)
        state = (app.runs.order, app.runs.filter_text, isinstance(app.screen, TimelineScreen))
    assert state == (app.runs.NATURAL_ORDER, "", True)


async def test_keys_typed_right_after_the_slash_go_to_the_filter(seeded_db: Path) -> None:
    """A paste or a fast typist: the keys arrive before the screen is redrawn. They must
    filter, not reach the table (the c and r of "ticker" would cancel and resume)."""
    from textual import events

    app = make_app(seeded_db)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.processes.move_cursor(row=1)  # summarize-news: r would resume it
        for character in "/ticker":
            key = "slash" if character == "/" else character
            app.post_message(events.Key(key, character))
        await settle(pilot)
        state = (app.filter_bar.value, app.processes.filter_text, app.focused)
    assert state == ("ticker", "ticker", app.filter_bar)
    with Store(seeded_db, readonly=True) as store:
        assert list(store.db.query("SELECT * FROM control")) == []
