"""``agentos usage``: calls recorded in a real SQLite file, summed by the CLI by agent,
engine, model and day, compared with sums worked out by hand below."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from agentos.store import Store, create_run, finish_run, record_llm_call
from agentos.usage.pricing import Pricing
from agentos.usage.report import busy_shares, day_start, next_day_start, usage
from tests.cli_process import run_agentos

CONFIG = """\
engines:
  - {name: remote, type: openai, base_url: "http://127.0.0.1:9", models: [gpt-x, mystery]}
  - {name: gpu, type: openai, base_url: "http://127.0.0.1:8", models: [small]}
  - {name: local, type: local}
pricing:
  currency: EUR
  models:
    gpt-x: {input: 0.15, output: 0.60}
  engines:
    gpu: {per_hour: 3.60}
"""


def local(text: str) -> float:
    """Unix time of a local time ``YYYY-MM-DD HH:MM:SS``."""
    return time.mktime(time.strptime(text, "%Y-%m-%d %H:%M:%S"))


def call(store: Store, process: str | None, engine: str, model: str, at: str, **kw: Any) -> None:
    start = local(at)
    record_llm_call(
        store,
        process=process,
        engine=engine,
        model=model,
        kind="chat",
        status=kw.pop("status", "ok"),
        started_at=start,
        finished_at=start + kw.pop("seconds", 1.0),
        cache_hit=kw.pop("cache_hit", False),
        **kw,
    )


@pytest.fixture
def recorded(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "config.yaml").write_text(CONFIG)
    with Store(tmp_path / "usage.db") as store:
        old = create_run(store, agent="c", kind="prompt", spec={}, wanted=1, agents_file=None)
        finish_run(store, old, status="succeeded", successes=1, attempts=1)
        day1, day2 = "2026-11-02", "2026-11-03"
        call(
            store,
            "a",
            "remote",
            "gpt-x",
            f"{day1} 10:00:00",
            prompt_tokens=1000,
            completion_tokens=200,
        )
        call(
            store,
            "a",
            "remote",
            "gpt-x",
            f"{day1} 10:00:01",
            prompt_tokens=1000,
            completion_tokens=200,
            cache_hit=True,
        )
        call(
            store,
            "b",
            "remote",
            "mystery",
            f"{day1} 10:30:00",
            prompt_tokens=500,
            completion_tokens=50,
        )
        # gpu by the hour: b alone 0-5 s, both 5-10 s, a alone 10-15 s: 7.5 s each
        call(
            store,
            "b",
            "gpu",
            "small",
            f"{day1} 11:00:00",
            seconds=10.0,
            prompt_tokens=100,
            completion_tokens=10,
        )
        call(
            store,
            "a",
            "gpu",
            "small",
            f"{day1} 11:00:05",
            seconds=10.0,
            prompt_tokens=100,
            completion_tokens=10,
        )
        # recorded before m012 (no process): the run's agent
        call(
            store,
            None,
            "local",
            "smollm2",
            f"{day2} 09:00:00",
            run_id=old,
            prompt_tokens=300,
            completion_tokens=30,
        )
        call(store, "c", "remote", "gpt-x", f"{day2} 09:10:00", status="error")
        call(
            store,
            "client[ci]",
            "remote",
            "gpt-x",
            f"{day2} 12:00:00",
            prompt_tokens=2000,
            completion_tokens=1000,
        )
    yield tmp_path


def by(folder: Path, group: str, *more: str) -> dict[str, Any]:
    done = run_agentos("usage", "--db", "usage.db", "--by", group, "--json", *more, cwd=folder)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["currency"] == "EUR"
    return data


def pick(data: dict[str, Any], *fields: str) -> dict[str, tuple[Any, ...]]:
    rows = [*data["rows"], data["total"]]
    return {row["key"]: tuple(row[f] for f in fields) for row in rows}


FIELDS = (
    "calls",
    "cached",
    "failed",
    "prompt_tokens",
    "completion_tokens",
    "cost",
    "unpriced_calls",
)


def test_by_agent(recorded: Path) -> None:
    # a: 0.00027 (1000 x 0.15 + 200 x 0.60 per million) + 7.5 s x 0.001/s
    assert pick(by(recorded, "agent"), *FIELDS) == {
        "a": (2, 1, 0, 1100, 210, "0.007770", 0),
        "b": (2, 0, 0, 600, 60, "0.007500", 1),
        "c": (2, 0, 1, 300, 30, "0.000000", 0),
        "client[ci]": (1, 0, 0, 2000, 1000, "0.000900", 0),
        "total": (7, 1, 1, 4000, 1300, "0.016170", 1),
    }


def test_by_engine_model_and_day(recorded: Path) -> None:
    assert pick(by(recorded, "engine"), *FIELDS, "busy_s") == {
        "gpu": (2, 0, 0, 200, 20, "0.015000", 0, 15.0),
        "local": (1, 0, 0, 300, 30, "0.000000", 0, 0.0),
        "remote": (4, 1, 1, 3500, 1250, "0.001170", 1, 0.0),
        "total": (7, 1, 1, 4000, 1300, "0.016170", 1, 15.0),
    }
    assert pick(by(recorded, "model"), "calls", "cost", "unpriced_calls") == {
        "gpt-x": (3, "0.001170", 0),
        "mystery": (1, None, 1),
        "small": (2, "0.015000", 0),
        "smollm2": (1, "0.000000", 0),
        "total": (7, "0.016170", 1),
    }
    assert pick(by(recorded, "day"), "calls", "cached", "prompt_tokens", "cost") == {
        "2026-11-02": (4, 1, 1700, "0.015270"),
        "2026-11-03": (3, 0, 2300, "0.000900"),
        "total": (7, 1, 4000, "0.016170"),
    }
    since = by(recorded, "agent", "--since", "2026-11-03")
    assert pick(since, "calls", "cost") == {
        "c": (2, "0.000000"),
        "client[ci]": (1, "0.000900"),
        "total": (3, "0.000900"),
    }


def test_table_and_csv_say_what_has_no_price(recorded: Path) -> None:
    table = run_agentos("usage", "--db", "usage.db", "--by", "model", cwd=recorded)
    assert table.returncode == 0, table.stderr
    lines = {line.split()[0]: line.split() for line in table.stdout.splitlines() if line.strip()}
    assert lines["model"][-2:] == ["cost", "(EUR)"]
    assert lines["mystery"][-2:] == ["no", "price"]
    assert lines["total"][-1] == "0.016170*"
    assert "1 calls have no price" in table.stdout
    csv_out = run_agentos("usage", "--db", "usage.db", "--csv", cwd=recorded)
    header, *rows = csv_out.stdout.splitlines()
    assert header.split(",")[:2] == ["key", "calls"] and len(rows) == 5
    assert rows[-1].startswith("total,7,1,1,4000,1300,5300,")


def test_bad_input_is_named(recorded: Path) -> None:
    bad = run_agentos("usage", "--db", "usage.db", "--by", "week", cwd=recorded)
    assert (
        bad.returncode == 2 and "--by 'week' is not one of agent, engine, model, day" in bad.stderr
    )
    both = run_agentos("usage", "--db", "usage.db", "--csv", "--json", cwd=recorded)
    assert both.returncode == 2 and "choose one" in both.stderr
    (recorded / "config.yaml").write_text(CONFIG.replace("per_hour: 3.60", "per_hour: -1"))
    negative = run_agentos("usage", "--db", "usage.db", cwd=recorded)
    assert negative.returncode == 2 and "per_hour" in negative.stderr


def test_busy_shares_add_up_to_busy_time() -> None:
    def c(start: float, end: float | None, cache_hit: int = 0) -> Any:
        return ("p", "e", "m", start, end, 0, 0, cache_hit, "ok")

    calls = [c(0, 4), c(1, 2), c(1, 2), c(3, 3.5, cache_hit=1), c(6, 7), c(6.5, None)]
    shares = [share for _, share in busy_shares(calls)]
    # 0-1: one call; 1-2: three (1/3 s each); 2-4: one; 6-7: one; busy 4 + 1 = 5 s
    assert sorted(shares) == sorted([0.0, 0.0, 1 / 3, 1 / 3, 1 + 1 / 3 + 2, 1.0])
    assert sum(shares) == pytest.approx(5.0)


def test_days_are_local_midnights() -> None:
    noon = local("2026-03-28 12:00:00")
    assert day_start(noon) == local("2026-03-28 00:00:00")
    assert next_day_start(noon) == local("2026-03-29 00:00:00")
    assert Pricing().rule("remote", "gpt-x") == "none"
    priced = Pricing(models={"gpt-x": (Decimal("0.15"), Decimal("0.6"))})
    assert priced.token_cost("gpt-x", 1, 1) == Decimal("0.00000075")


def test_usage_of_one_process_shares_hourly_time_with_the_others(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(CONFIG)
    with Store(tmp_path / "one.db") as store:
        call(store, "b", "gpu", "small", "2026-11-02 11:00:00", seconds=10.0)
        call(store, "a", "gpu", "small", "2026-11-02 11:00:05", seconds=10.0)
        store.flush()
        pricing = Pricing(hourly={"gpu": Decimal("3.6")})
        only_a = usage(store, pricing, who="a")
    assert [row.key for row in only_a.rows] == ["a"]
    assert only_a.rows[0].busy_s == pytest.approx(7.5)
    assert only_a.rows[0].cost == Decimal("0.0075")
