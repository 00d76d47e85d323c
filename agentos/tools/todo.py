"""The todo tools: a todo list kept in the agentos database (table ``todos``).

Four tools, named together as ``todo`` in an agent's ``tools:``: ``todo_add`` (a title),
``todo_list`` (every item), ``todo_complete`` and ``todo_delete`` (by id). The list
is the user's, shared by every agent and every ``agentos ask``; ``agent`` records who
added an item.

Writes go through the store's writer like every other write (one thread owns them), and
each tool waits for its write to be committed before it answers, so a ``todo_list`` in
the next step of a plan sees the item a ``todo_add`` just added. The tools are ``async``
and read ``store.db`` on the event loop's thread, so they never share that connection
with another thread.
"""

from __future__ import annotations

import time
from typing import Any

from agentos.store import Store
from agentos.store.writer import Execute, Insert
from agentos.tools.types import PlanExample, Tool, ToolContext, ToolError

_ID = {"type": "integer", "minimum": 1, "description": "the item's id, as todo_list shows it"}


def _store(context: ToolContext) -> Store:
    if context.store is None:
        raise ToolError("the todo list needs the agentos database, and this run has none")
    return context.store


async def add(context: ToolContext, title: str) -> dict[str, Any]:
    store = _store(context)
    title = title.strip()
    if not title:
        raise ToolError("a todo needs a title")
    created = time.time()
    store.submit(
        Insert("todos", {"title": title, "done": 0, "created_at": created, "agent": context.agent})
    )
    await store.aflush()
    row = store.db.execute(
        "SELECT id FROM todos WHERE title = ? AND created_at = ? ORDER BY id DESC LIMIT 1",
        [title, created],
    ).fetchone()
    return {"id": row[0] if row else None, "title": title, "done": False}


async def list_items(context: ToolContext) -> list[dict[str, Any]]:
    store = _store(context)
    await store.aflush()
    rows = store.db.execute("SELECT id, title, done FROM todos ORDER BY id").fetchall()
    return [{"id": r[0], "title": r[1], "done": bool(r[2])} for r in rows]


async def _existing(store: Store, item: int) -> tuple[str, bool]:
    await store.aflush()
    row = store.db.execute("SELECT title, done FROM todos WHERE id = ?", [item]).fetchone()
    if row is None:
        raise ToolError(f"there is no todo with id {item}; todo_list shows the ids")
    return str(row[0]), bool(row[1])


async def complete(context: ToolContext, item: int) -> dict[str, Any]:
    store = _store(context)
    title, _done = await _existing(store, item)
    store.submit(
        Execute("UPDATE todos SET done = 1, done_at = ? WHERE id = ?", (time.time(), item))
    )
    await store.aflush()
    return {"id": item, "title": title, "done": True}


async def delete(context: ToolContext, item: int) -> dict[str, Any]:
    store = _store(context)
    title, done = await _existing(store, item)
    store.submit(Execute("DELETE FROM todos WHERE id = ?", (item,)))
    await store.aflush()
    return {"id": item, "title": title, "done": done, "deleted": True}


async def _add(args: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    return await add(context, str(args["title"]))


async def _list(args: dict[str, Any], context: ToolContext) -> list[dict[str, Any]]:
    return await list_items(context)


async def _complete(args: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    return await complete(context, int(args["id"]))


async def _delete(args: dict[str, Any], context: ToolContext) -> dict[str, Any]:
    return await delete(context, int(args["id"]))


_EXAMPLES: tuple[PlanExample, ...] = (
    PlanExample(
        "Add a todo to call mom, then list my todos",
        (("todo_add", {"title": "call mom"}), ("todo_list", {})),
    ),
    PlanExample("Add a task: water the plants", (("todo_add", {"title": "water the plants"}),)),
    PlanExample("Remind me to pay rent", (("todo_add", {"title": "pay rent"}),)),
    PlanExample(
        "Put 'renew the lease' on my todo list", (("todo_add", {"title": "renew the lease"}),)
    ),
    PlanExample("I need to email the landlord", (("todo_add", {"title": "email the landlord"}),)),
    PlanExample("Show my todo list", (("todo_list", {}),)),
    PlanExample("What are my tasks?", (("todo_list", {}),)),
    PlanExample("List everything on my todo list", (("todo_list", {}),)),
    PlanExample("Mark task 3 as done", (("todo_complete", {"id": 3}),)),
    PlanExample("Complete todo 7", (("todo_complete", {"id": 7}),)),
    PlanExample("I finished task 2", (("todo_complete", {"id": 2}),)),
    PlanExample("Remove todo 4", (("todo_delete", {"id": 4}),)),
    PlanExample("Delete task 9", (("todo_delete", {"id": 9}),)),
)
"""Requests and their plans, for planner prompts (see :mod:`agentos.tools.plans`)."""


def _examples(tool: str) -> tuple[PlanExample, ...]:
    """The examples whose first step calls ``tool``."""
    return tuple(example for example in _EXAMPLES if example.steps[0][0] == tool)


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def todo_tools() -> list[Tool]:
    return [
        Tool(
            name="todo_add",
            description="Add an item to the todo list.",
            parameters=_object(
                {
                    "title": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 200,
                        "description": "what is to be done, e.g. buy milk",
                    }
                },
                ["title"],
            ),
            function=_add,
            timeout_s=30.0,
            examples=_examples("todo_add"),
        ),
        Tool(
            name="todo_list",
            description="Show the todo list: every item with its id and whether it is done.",
            parameters=_object({}, []),
            function=_list,
            timeout_s=30.0,
            side_effects=False,
            examples=_examples("todo_list"),
        ),
        Tool(
            name="todo_complete",
            description="Mark a todo item as done.",
            parameters=_object({"id": _ID}, ["id"]),
            function=_complete,
            timeout_s=30.0,
            examples=_examples("todo_complete"),
        ),
        Tool(
            name="todo_delete",
            description="Delete a todo item.",
            parameters=_object({"id": _ID}, ["id"]),
            function=_delete,
            timeout_s=30.0,
            examples=_examples("todo_delete"),
        ),
    ]
