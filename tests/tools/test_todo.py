"""The todo tools keep the list in the database, each step seeing the one before."""

from __future__ import annotations

import sqlite3

from agentos.store import Store
from agentos.tools.registry import ToolContext, ToolRegistry


async def test_add_list_complete_delete(
    registry: ToolRegistry, context: ToolContext, store: Store
) -> None:
    tools = registry.tools

    milk = await registry.call(tools["todo_add"], {"title": "buy milk"}, context=context, step=1)
    bread = await registry.call(
        tools["todo_add"], {"title": " buy bread "}, context=context, step=2
    )
    listed = await registry.call(tools["todo_list"], {}, context=context, step=3)

    assert milk.output["title"] == "buy milk" and isinstance(milk.output["id"], int)
    assert listed.output == [
        {"id": milk.output["id"], "title": "buy milk", "done": False},
        {"id": bread.output["id"], "title": "buy bread", "done": False},
    ]

    done = await registry.call(
        tools["todo_complete"], {"id": milk.output["id"]}, context=context, step=4
    )
    gone = await registry.call(
        tools["todo_delete"], {"id": bread.output["id"]}, context=context, step=5
    )
    after = await registry.call(tools["todo_list"], {}, context=context, step=6)

    assert done.output == {"id": milk.output["id"], "title": "buy milk", "done": True}
    assert gone.output["deleted"] is True
    assert after.output == [{"id": milk.output["id"], "title": "buy milk", "done": True}]
    conn = sqlite3.connect(store.path)
    try:
        [(title, flag, agent, done_at)] = conn.execute(
            "select title, done, agent, done_at from todos"
        ).fetchall()
    finally:
        conn.close()
    assert (title, flag, agent) == ("buy milk", 1, "tester") and done_at > 0


async def test_unknown_ids_and_bad_arguments_are_refused(
    registry: ToolRegistry, context: ToolContext
) -> None:
    tools = registry.tools

    missing = await registry.call(tools["todo_complete"], {"id": 42}, context=context, step=1)
    deleted = await registry.call(tools["todo_delete"], {"id": 42}, context=context, step=2)
    empty = await registry.call(tools["todo_add"], {"title": ""}, context=context, step=3)
    text_id = await registry.call(tools["todo_delete"], {"id": "two"}, context=context, step=4)
    extra = await registry.call(tools["todo_list"], {"all": True}, context=context, step=5)

    assert "no todo with id 42" in (missing.error or "")
    assert "no todo with id 42" in (deleted.error or "")
    assert empty.error_class == "ArgumentError"
    assert text_id.error_class == "ArgumentError" and "integer" in (text_id.error or "")
    assert extra.error_class == "ArgumentError"
