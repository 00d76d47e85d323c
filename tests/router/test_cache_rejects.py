"""The cache does not replay failures: its key covers what an engine changes in the body
it sends (structured_output, a chat template), and answers an agent refused are not
served again, in the same run or the next one; accepted answers still are."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from agentos.router.cache import ResponseCache, cache_key
from agentos.router.client import EngineClient
from agentos.router.jobs import InferenceRequest
from agentos.router.router import EngineHandle, Router
from agentos.store import Store
from agentos.testing.engine import LoopbackEngine
from tests.router.conftest import Connect, templated
from tests.test_cli import agentos, engine, write_config

__all__ = ["engine"]  # the fixture, for the CLI test

SCHEMA = {
    "type": "object",
    "properties": {"greeting": {"type": "string"}},
    "required": ["greeting"],
}


def ask(text: str, *, schema: dict[str, Any] | None = SCHEMA) -> InferenceRequest:
    """A chat job at temperature 0: every attempt shares one cache entry."""
    return InferenceRequest(
        kind="chat",
        messages=[{"role": "user", "content": text}],
        params={"temperature": 0, "max_tokens": 32},
        json_schema=schema,
    )


def structured(handle: EngineHandle, on: bool) -> EngineHandle:
    client = EngineClient(handle.name, handle.client.base_url, structured_output=on)
    return dataclasses.replace(handle, client=client)


async def test_switching_structured_output_on_is_not_served_the_answer_fetched_without(
    connect: Connect, tmp_path: Path
) -> None:
    async with LoopbackEngine() as engine:
        plain = structured(await connect(engine), on=False)
        strict = structured(await connect(engine), on=True)
        with Store(tmp_path / "a.db") as store:
            cache = ResponseCache(store)
            async with Router([plain], cache=cache) as router:
                before = await router.submit(ask("Greet me."))
                untyped = await router.submit(ask("Greet me.", schema=None))
            async with Router([strict], cache=cache) as router:
                after = await router.submit(ask("Greet me."))
                untyped_again = await router.submit(ask("Greet me.", schema=None))
            await strict.client.aclose()
            await plain.client.aclose()
    assert not before.cache_hit
    assert not after.cache_hit, "the body now carries response_format: a new question"
    assert json.loads(after.text) == {"greeting": json.loads(after.text)["greeting"]}
    assert before.text != after.text
    assert untyped_again.cache_hit and untyped_again.text == untyped.text, (
        "without a schema the body is the same, so the answer is shared"
    )


async def test_a_chat_template_is_part_of_the_key(connect: Connect, tmp_path: Path) -> None:
    async with LoopbackEngine() as engine:
        chat_handle = await connect(engine)
        prompt_handle = await templated(await connect(engine))
        request = ask("Greet me.", schema=None)
        assert prompt_handle.as_prompt(request) and not chat_handle.as_prompt(request)
        assert chat_handle.cache_shape(request) == {}
        assert set(prompt_handle.cache_shape(request)) == {"chat_template"}
        with Store(tmp_path / "a.db") as store:
            cache = ResponseCache(store)
            async with Router([chat_handle], cache=cache) as router:
                first = await router.submit(request)
            async with Router([prompt_handle], cache=cache) as router:
                second = await router.submit(ask("Greet me.", schema=None))
                third = await router.submit(ask("Greet me.", schema=None))
    assert not first.cache_hit and not second.cache_hit
    assert third.cache_hit and third.cache_key == second.cache_key != first.cache_key


def test_an_empty_shape_keeps_the_key_entries_were_stored_under() -> None:
    request = ask("Greet me.")
    assert cache_key(request, "m", {}) == cache_key(request, "m", None) == cache_key(request, "m")
    assert cache_key(request, "m", {"response_format": "json_object"}) != cache_key(request, "m")


async def test_a_rejected_answer_is_asked_again_now_and_in_the_next_run(
    connect: Connect, tmp_path: Path
) -> None:
    db = tmp_path / "a.db"
    async with LoopbackEngine() as engine:
        handle = await connect(engine)
        with Store(db) as store:
            async with Router([handle], cache=ResponseCache(store)) as router:
                refused = await router.submit(ask("Greet me."))
                accepted = await router.submit(ask("Name a colour."))
                assert (await router.submit(ask("Greet me."))).cache_hit
                router.reject(refused)
                again = await router.submit(ask("Greet me."))
                assert not again.cache_hit, "not served again in the same run"
        asked = engine.stats.requests
        with Store(db) as store:  # the next run: a new process's cache on the same file
            async with Router([handle], cache=ResponseCache(store)) as router:
                next_run = await router.submit(ask("Greet me."))
                router.reject(next_run)
                kept = await router.submit(ask("Name a colour."))
        with Store(db) as store:
            async with Router([handle], cache=ResponseCache(store)) as router:
                third_run = await router.submit(ask("Greet me."))
    assert next_run.cache_hit, "the answer fetched after the rejection is served"
    assert not third_run.cache_hit, "rejected in the second run: asked again in the third"
    assert kept.cache_hit and kept.text == accepted.text, "accepted answers are still served"
    assert engine.stats.requests == asked + 1


def test_a_late_rejection_does_not_delete_a_newer_answer(tmp_path: Path) -> None:
    request = ask("Greet me.")
    with Store(tmp_path / "a.db") as store:
        cache = ResponseCache(store)

        def put(text: str) -> str:
            return cache.put(
                request,
                "m",
                text=text,
                response={"choices": [{"message": {"content": text}}]},
                embedding=None,
                prompt_tokens=1,
                completion_tokens=1,
                engine="e",
            )

        key = put("not json")
        cache.reject(key, "not json")
        assert cache.get(request, "m") is None
        put('{"greeting": "hi"}')
        cache.reject(key, "not json")  # a second attempt refusing the old answer, late
        store.flush()
        hit = ResponseCache(store).get(request, "m")
    assert hit is not None and hit.text == '{"greeting": "hi"}'


AGENTS = """\
agents:
  - name: greeter
    prompt: "Greet the user."
    response_format:
      greeting: a greeting
    temperature: 0
    life_cycle: {type: single-shot, length: 1, max_attempts: 2}
"""


def test_agentos_run_after_switching_structured_output_on_succeeds(
    tmp_path: Path, engine: LoopbackEngine
) -> None:
    """Without structured_output the test engine answers this agent with a sentence, which
    does not parse; with it, with JSON. The failed run's answers must not be replayed."""
    engine.record_requests = True
    (tmp_path / "agents.yaml").write_text(AGENTS)
    write_config(tmp_path, engine.url)
    first = agentos("run", "agents.yaml", "--db", "a.db", "--plain", cwd=tmp_path)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "failed: greeter 0/1" in first.stdout
    asked_first = asked_to_greet(engine)

    again = agentos("run", "agents.yaml", "--db", "a.db", "--plain", cwd=tmp_path)
    assert again.returncode == 1
    assert "from the cache" not in again.stdout, "refused answers are asked again"
    assert asked_to_greet(engine) > asked_first

    write_config(tmp_path, engine.url, structured_output=True)
    fixed = agentos("run", "agents.yaml", "--db", "a.db", "--plain", cwd=tmp_path)
    output = fixed.stdout + fixed.stderr
    assert fixed.returncode == 0, output
    assert "succeeded: greeter 1/1" in output and "Traceback" not in output
    rerun = agentos("run", "agents.yaml", "--db", "a.db", "--plain", cwd=tmp_path)
    assert rerun.returncode == 0
    assert "1 of 1 answers from the cache" in rerun.stdout, "accepted answers are served"


def asked_to_greet(engine: LoopbackEngine) -> int:
    """Requests the engine got for the agent (chat, or its conversation as a prompt)."""
    return sum("Greet the user" in json.dumps(body) for _path, body in engine.stats.recorded)
