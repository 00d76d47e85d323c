"""Where the database is found: --db, AGENTOS_DB, AGENTOS_HOME, the user data dir."""

from __future__ import annotations

from pathlib import Path

import platformdirs
import pytest

from agentos.store import default_db_path, resolve_db_path


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTOS_DB", raising=False)
    monkeypatch.delenv("AGENTOS_HOME", raising=False)


def test_user_data_dir_by_default() -> None:
    expected = Path(platformdirs.user_data_dir("agentos")) / "agentos.db"
    assert default_db_path() == expected


def test_agentos_home_holds_the_database(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AGENTOS_HOME", str(tmp_path / "home"))
    assert default_db_path() == tmp_path / "home" / "agentos.db"


def test_agentos_db_beats_agentos_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AGENTOS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AGENTOS_DB", str(tmp_path / "explicit.db"))
    assert default_db_path() == tmp_path / "explicit.db"


def test_empty_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AGENTOS_DB", "")
    monkeypatch.setenv("AGENTOS_HOME", str(tmp_path))
    assert default_db_path() == tmp_path / "agentos.db"


def test_explicit_path_wins_and_expands_the_home_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AGENTOS_DB", str(tmp_path / "env.db"))
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert resolve_db_path("~/runs.db") == tmp_path / "user" / "runs.db"
    assert resolve_db_path(tmp_path / "x.db") == tmp_path / "x.db"
    assert resolve_db_path(None) == tmp_path / "env.db"
