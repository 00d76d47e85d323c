"""The function behind examples/counter_fsm.yaml: a counter written as a finite-state machine.

The machine lives in the agent's persistent state (``context.state``), so each run makes
one transition from where the previous run, in any process, left it::

    idle ─▶ counting (count 1) ─▶ … ─▶ done (count = limit) ─▶ idle (count 0) ─▶ …

Every run returns one item describing the step, with the model's spelling of the count in
words; its id (cycle and count) is unique, so each step is stored once.

An ``async`` function: agentos awaits it on its event loop, and it asks the model with
``await context.ask``.
"""

from __future__ import annotations

from typing import Any

TRANSITIONS = {"idle": "counting", "counting": "counting", "done": "idle"}
"""The next state of each state; ``counting`` becomes ``done`` once the count reaches the
limit."""


async def step(limit: int, context: Any) -> dict[str, Any]:
    """Advance the machine one transition and report it."""
    state = context.state.get("state", "idle")
    count = context.state.get("count", 0)
    cycle = context.state.get("cycle", 0)
    following = TRANSITIONS[state]
    if state == "idle":
        count, cycle = 0, cycle + 1
    if following == "counting":
        count += 1
        if count >= limit:
            following = "done"
    if following == "idle":
        count = 0
    # one write: the state and its counters never disagree, even after a crash
    context.state.update({"state": following, "count": count, "cycle": cycle})
    context.log(f"{state} -> {following} (count {count}, cycle {cycle})")
    words = ""
    if following != "idle":
        answer = await context.ask(f"Write the number {count} in English words, nothing else.")
        words = answer.strip().splitlines()[0] if answer.strip() else ""
    return {
        "id": f"cycle-{cycle}-count-{count}-{following}",
        "from": state,
        "to": following,
        "count": count,
        "cycle": cycle,
        "in_words": words,
    }
