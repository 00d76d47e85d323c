"""Batching against the loopback test engine: which jobs share a request, how big requests
get, when a batch leaves (full, or its oldest job has waited the batch window), and how
each answer of a batch finds its job.

Every prompt carries ``ANSWER: <job id>``, so the engine's (deterministic) answer to a
prompt names the job it belongs to: a job that receives another job's answer shows up as
a mismatch. Batch composition is read off ``engine.stats.recorded``, the bodies the engine
actually received. One wire-level corner (an engine that answers choices out of order, or
with impossible indexes) uses a scripted loopback server; everything else crosses real HTTP.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web

from agentos.errors import EngineMalformedAnswer
from agentos.router.chat_template import ChatTemplate, ChatTemplateError
from agentos.router.client import EngineClient, EngineInfo
from agentos.router.jobs import InferenceRequest, RetryPolicy
from agentos.router.router import EngineHandle, Router, RouterSettings
from agentos.testing.engine import CostModel, LoopbackEngine
from tests.router.conftest import Connect, ListRecorder, scripted_engine

FAST_RETRY = RetryPolicy(max_attempts=3, backoff_initial=0.001, backoff_max=0.01, jitter=0.5)


def batching(
    handle: EngineHandle,
    *,
    max_batch_size: int = 8,
    window_s: float | None = 0.0,
    max_requests: int | None = None,
) -> EngineHandle:
    """The handle as a prompt-batching engine (which the loopback engine is: detected)."""
    assert handle.info.prompt_batching, "detection must find that the engine takes prompt lists"
    return dataclasses.replace(
        handle,
        prompt_batching=True,
        max_batch_size=max_batch_size,
        batch_window_s=window_s,
        max_requests=handle.max_requests if max_requests is None else max_requests,
    )


def completion(job_id: str, *, model: str | None = None, **params: Any) -> InferenceRequest:
    return InferenceRequest(
        kind="completions", model=model, prompt=f"job {job_id} ANSWER: {job_id}", params=params
    )


def prompts_of(body: dict[str, Any]) -> list[str]:
    """The prompts of one completions request, whether sent as a list or a lone string."""
    prompt = body["prompt"]
    return list(prompt) if isinstance(prompt, list) else [prompt]


def job_of(prompt: str) -> str:
    return prompt.rsplit("ANSWER:", 1)[1].split("\n", 1)[0].strip()


async def test_batches_never_exceed_max_batch_size_and_fill_under_load(connect: Connect) -> None:
    async with LoopbackEngine() as engine:
        handle = batching(await connect(engine), max_batch_size=8, max_requests=1)
        engine.cost = CostModel(slots=4, per_request_ms=80, per_prompt_ms=1)
        async with asyncio.timeout(10), Router([handle]) as router:
            tasks = []
            for wave in range(10):  # jobs keep arriving while the engine is busy
                for i in range(wave * 5, wave * 5 + 5):
                    tasks.append(asyncio.create_task(router.submit(completion(f"j{i}"))))
                await asyncio.sleep(0.005)
            answers = await asyncio.gather(*tasks)
    assert [a.text for a in answers] == [f"j{i}" for i in range(50)]
    sizes = [len(prompts_of(body)) for _path, body in engine.stats.recorded]
    assert sum(sizes) == 50
    assert max(sizes) <= 8 and engine.stats.max_prompts_per_request <= 8
    assert sizes.count(8) > len(sizes) / 2, sizes
    assert router.snapshot()["jobs_per_request"] >= 5


@dataclasses.dataclass(frozen=True)
class Settings:
    """What may differ between jobs; only jobs with equal settings may share a request."""

    temperature: float
    max_tokens: int
    model: str
    schema: bool
    pinned: bool

    @property
    def tag(self) -> str:
        return (
            f"t{self.temperature}-n{self.max_tokens}-{self.model}"
            f"-{'schema' if self.schema else 'free'}-{'pinned' if self.pinned else 'any'}"
        )


SCHEMA = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}


async def test_only_jobs_with_identical_settings_share_a_request(connect: Connect) -> None:
    async with LoopbackEngine(models=("m1", "m2")) as engine:
        handle = batching(await connect(engine), max_batch_size=8, window_s=0.05)
        handle.client.structured_output = True  # so the schema shows in the body
        kinds = [
            Settings(*values)
            for values in itertools.product(
                (0.0, 0.7), (16, 32), ("m1", "m2"), (False, True), (False, True)
            )
        ]
        jobs: list[tuple[str, Settings]] = [(f"{s.tag}-#{k}", s) for s in kinds for k in range(3)]
        settings_of = dict(jobs)

        async def run(job_id: str, s: Settings) -> str:
            request = InferenceRequest(
                kind="completions",
                model=s.model,
                prompt=f"{s.tag} ANSWER: {job_id}",
                params={"temperature": s.temperature, "max_tokens": s.max_tokens},
                json_schema=SCHEMA if s.schema else None,
            )
            answer = await router.submit(request, engine="loop" if s.pinned else None)
            return answer.text

        async with asyncio.timeout(10), Router([handle]) as router:
            texts = await asyncio.gather(*(run(job_id, s) for job_id, s in jobs))
    assert texts == [job_id for job_id, _ in jobs]
    seen: list[str] = []
    for _path, body in engine.stats.recorded:
        members = [settings_of[job_of(p)] for p in prompts_of(body)]
        assert len(set(members)) == 1, f"incompatible jobs in one request: {members}"
        s = members[0]
        assert body["model"] == s.model
        assert body["temperature"] == s.temperature and body["max_tokens"] == s.max_tokens
        assert ("response_format" in body) == s.schema
        seen.extend(job_of(p) for p in prompts_of(body))
    assert sorted(seen) == sorted(settings_of), "every job exactly once"
    # compatible jobs did share: the three jobs of each kind arrived together, one request
    assert len(engine.stats.recorded) == len(kinds)


async def test_samples_of_one_prompt_share_a_request_without_one_seed(connect: Connect) -> None:
    """Attempt k of a request with temperature > 0 asks for sample k (its seed when sent
    alone). Batched together, the attempts must not all get the first attempt's seed: the
    request carries none, and the engine samples each prompt on its own."""
    async with LoopbackEngine() as engine:
        handle = batching(await connect(engine), max_batch_size=8, window_s=0.05)

        def attempt(k: int) -> InferenceRequest:
            return InferenceRequest(
                kind="completions", prompt="tell a story", params={"temperature": 0.8}, sample=k
            )

        async with asyncio.timeout(10), Router([handle]) as router:
            together = await asyncio.gather(*(router.submit(attempt(k)) for k in range(4)))
            handle.batch_window_s = 0.0
            alone = [await router.submit(attempt(k), use_cache=False) for k in range(4)]
            again = [await router.submit(attempt(k), use_cache=False) for k in range(4)]
    assert len(together) == 4
    batched, *singles = [body for _path, body in engine.stats.recorded]
    assert prompts_of(batched) == ["tell a story"] * 4 and "seed" not in batched
    assert [body["seed"] for body in singles] == [0, 1, 2, 3] * 2
    assert len({a.text for a in alone}) == 4, "four samples, four different answers"
    assert [a.text for a in again] == [a.text for a in alone], "sample k is reproducible"


TEMPLATE = ChatTemplate(
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}\n<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
    "test",
    stop=("<|im_end|>",),
)


def agent_chat(job_id: str, k: int = 0, **params: Any) -> InferenceRequest:
    """A chat job as a prompt agent makes it: system + user, its sampling, attempt k."""
    return InferenceRequest(
        kind="chat",
        messages=[
            {"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": f"job {job_id} ANSWER: {job_id}"},
        ],
        params={"temperature": 0.7, "max_tokens": 16, **params},
        sample=k,
    )


async def test_agents_chat_jobs_share_batches_as_prompts_of_the_models_chat_template(
    connect: Connect, recorder: ListRecorder
) -> None:
    async with LoopbackEngine() as engine:
        handle = batching(await connect(engine), max_batch_size=8, window_s=0.05)
        handle.chat_template = TEMPLATE
        async with asyncio.timeout(10), Router([handle], recorder) as router:
            answers = await asyncio.gather(
                *(router.submit(agent_chat(f"c{k}", k), job_id=f"c{k}") for k in range(12))
            )
    assert [a.text for a in answers] == [f"c{k}" for k in range(12)]
    assert {path for path, _body in engine.stats.recorded} == {"/v1/completions"}
    sizes = [len(prompts_of(body)) for _path, body in engine.stats.recorded]
    assert sorted(sizes) == [4, 8]
    for _path, body in engine.stats.recorded:
        for prompt in prompts_of(body):
            job = job_of(prompt)
            assert prompt == TEMPLATE.render(agent_chat(job).messages or [])
        assert body["stop"] == ["<|im_end|>"]
        assert body["temperature"] == 0.7 and body["max_tokens"] == 16
        assert "seed" not in body, "different samples share no seed"
    own = recorder.for_job("c3")[0]
    assert own.kind == "chat" and own.batch_size in (4, 8)
    assert own.request["prompt"] == TEMPLATE.render(agent_chat("c3").messages or [])


async def test_chat_jobs_that_only_a_chat_endpoint_understands_stay_chat(
    connect: Connect,
) -> None:
    async with LoopbackEngine() as engine:
        handle = batching(await connect(engine), max_batch_size=8, window_s=0.0)
        handle.chat_template = TEMPLATE
        tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
        async with asyncio.timeout(10), Router([handle]) as router:
            answer = await router.submit(agent_chat("t", tools=tools))
    assert answer.text == "t"
    assert [path for path, _body in engine.stats.recorded] == ["/v1/chat/completions"]


async def test_a_conversation_the_template_refuses_fails_its_jobs_with_the_reason(
    connect: Connect,
) -> None:
    async with LoopbackEngine() as engine:
        handle = batching(await connect(engine), max_batch_size=8, window_s=0.0)
        handle.chat_template = ChatTemplate(
            "{{ raise_exception('no system messages, please') }}", "strict"
        )
        async with asyncio.timeout(10), Router([handle]) as router:
            with pytest.raises(ChatTemplateError, match="no system messages"):
                await router.submit(agent_chat("x"))
            assert handle.stats.in_flight == 0
            done = await router.submit(completion("after"))
    assert done.text == "after", "the router goes on"


async def test_chat_jobs_go_one_per_request_up_to_max_requests_at_once(connect: Connect) -> None:
    async with LoopbackEngine() as engine:
        handle = batching(await connect(engine), max_batch_size=8, window_s=0.05, max_requests=3)
        engine.cost = CostModel(slots=8, per_request_ms=50)

        def chat(job_id: str) -> InferenceRequest:
            content = f"job {job_id} ANSWER: {job_id}"
            return InferenceRequest(kind="chat", messages=[{"role": "user", "content": content}])

        async with asyncio.timeout(10), Router([handle]) as router:
            answers = await asyncio.gather(
                *(router.submit(chat(f"c{i}")) for i in range(12)),
                *(router.submit(completion(f"p{i}")) for i in range(8)),
            )
    assert [a.text for a in answers] == [f"c{i}" for i in range(12)] + [f"p{i}" for i in range(8)]
    chats = [body for path, body in engine.stats.recorded if path == "/v1/chat/completions"]
    assert len(chats) == 12
    assert all(len(body["messages"]) == 1 for body in chats)
    assert sorted(job_of(body["messages"][0]["content"]) for body in chats) == sorted(
        f"c{i}" for i in range(12)
    )
    lists = [body for path, body in engine.stats.recorded if path == "/v1/completions"]
    assert len(lists) == 1 and len(prompts_of(lists[0])) == 8, "completions still batched"
    assert engine.stats.max_in_flight == 3


async def _time_one_job(router: Router) -> float:
    started = time.monotonic()
    answer = await router.submit(completion("lone"))
    assert answer.text == "lone"
    return time.monotonic() - started


async def test_a_lone_job_waits_the_batch_window_before_it_is_sent(connect: Connect) -> None:
    async with LoopbackEngine() as engine:
        handle = batching(await connect(engine), window_s=None)  # the router-wide window
        settings = RouterSettings(batch_window_s=0.3)
        async with asyncio.timeout(10), Router([handle], settings=settings) as router:
            elapsed = await _time_one_job(router)
    assert 0.3 <= elapsed < 1.5
    assert [prompts_of(body) for _path, body in engine.stats.recorded] == [
        ["job lone ANSWER: lone"]
    ]


async def test_with_window_zero_a_lone_job_goes_at_once(connect: Connect) -> None:
    async with LoopbackEngine() as engine:
        handle = batching(await connect(engine), window_s=0.0)  # overrides the router's 1 s
        settings = RouterSettings(batch_window_s=1.0)
        async with asyncio.timeout(10), Router([handle], settings=settings) as router:
            elapsed = await _time_one_job(router)
    assert elapsed < 0.5
    assert engine.stats.requests == 1


async def test_a_full_batch_goes_without_waiting_for_the_window(connect: Connect) -> None:
    async with LoopbackEngine() as engine:
        handle = batching(await connect(engine), max_batch_size=4, window_s=0.6)
        async with asyncio.timeout(10), Router([handle]) as router:
            started = time.monotonic()
            tasks = [asyncio.create_task(router.submit(completion(f"j{i}"))) for i in range(5)]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            full_batch_s = time.monotonic() - started
            await asyncio.gather(*tasks)
            straggler_s = time.monotonic() - started
    assert full_batch_s < 0.45
    assert straggler_s >= 0.6  # the fifth job, alone in its batch, waited the window
    assert [len(prompts_of(body)) for _path, body in engine.stats.recorded] == [4, 1]


async def test_each_job_of_a_batch_gets_its_own_answer_and_record(
    connect: Connect, recorder: ListRecorder
) -> None:
    async with LoopbackEngine() as engine:
        handle = batching(await connect(engine), max_batch_size=8, window_s=0.05)
        async with asyncio.timeout(10), Router([handle], recorder) as router:
            ids = [f"job-{i:02d}" for i in range(24)]
            answers = await asyncio.gather(
                *(router.submit(completion(i), job_id=i, process="p") for i in ids)
            )
    assert [a.text for a in answers] == ids
    assert [len(prompts_of(body)) for _path, body in engine.stats.recorded] == [8, 8, 8]
    assert sorted(c.job_id for c in recorder.calls) == ids
    for answer, job_id in zip(answers, ids, strict=True):
        (call,) = recorder.for_job(job_id)
        assert call.id == answer.call_id and call.status == "ok"
        assert call.request["prompt"] == f"job {job_id} ANSWER: {job_id}"
        assert call.batch_size == 8 and call.batch_id is not None
        assert call.response is not None and call.response["choices"][0]["text"] == job_id
    assert len({c.batch_id for c in recorder.calls}) == 3


# -- wire-level corners: an engine answering choices out of order or with bad indexes --------

Answerer = Callable[[list[str], int], list[dict[str, Any]]]
"""Builds the ``choices`` of an answer to a list of prompts (the int: requests so far)."""


def reversed_choices(prompts: list[str], _seen: int) -> list[dict[str, Any]]:
    choices = [{"index": i, "text": job_of(p)} for i, p in enumerate(prompts)]
    return choices[::-1]


async def run_against(answerer: Answerer, n_jobs: int) -> tuple[list[object], list[list[str]]]:
    """Run ``n_jobs`` completions through a router whose one engine answers via
    ``answerer``; returns each job's outcome and the prompts of every request."""
    requests: list[list[str]] = []

    def handle(_request: web.Request, body: Any) -> tuple[int, Any]:
        prompts = prompts_of(body)
        requests.append(prompts)
        choices = answerer(prompts, len(requests))
        return 200, {"object": "text_completion", "choices": choices}

    info = EngineInfo(
        models=["m"], capabilities=["completions"], healthy=True, prompt_batching=True
    )
    async with scripted_engine(handle) as url:
        client = EngineClient("mock", url)
        engine = EngineHandle(
            name="mock",
            client=client,
            info=info,
            max_requests=1,
            max_batch_size=n_jobs,
            prompt_batching=True,
            batch_window_s=0.05,
        )
        try:
            async with asyncio.timeout(10), Router([engine]) as router:
                outcomes = await asyncio.gather(
                    *(router.submit(completion(f"j{i}"), retry=FAST_RETRY) for i in range(n_jobs)),
                    return_exceptions=True,
                )
        finally:
            await client.aclose()
    assert router.jobs_done + router.jobs_failed == n_jobs
    return [o.text if not isinstance(o, BaseException) else o for o in outcomes], requests


async def test_choices_in_shuffled_order_are_mapped_by_their_index() -> None:
    outcomes, requests = await run_against(reversed_choices, 8)
    assert outcomes == [f"j{i}" for i in range(8)]
    assert [len(r) for r in requests] == [8]


def first_answer_broken(kind: str) -> Answerer:
    def answer(prompts: list[str], seen: int) -> list[dict[str, Any]]:
        choices = [{"index": i, "text": job_of(p)} for i, p in enumerate(prompts)]
        if seen > 1:
            return choices
        if kind == "duplicate":
            choices[3]["index"] = 2
        elif kind == "out_of_range":
            choices[3]["index"] = len(prompts)
        elif kind == "no_index":
            del choices[3]["index"]
        return choices

    return answer


@pytest.mark.parametrize("kind", ["duplicate", "out_of_range", "no_index"])
async def test_an_answer_with_an_impossible_index_is_retried_not_misassigned(kind: str) -> None:
    outcomes, requests = await run_against(first_answer_broken(kind), 8)
    assert outcomes == [f"j{i}" for i in range(8)]
    assert [len(r) for r in requests] == [8] + [1] * 8, "the batch's jobs retried one by one"


def first_answer_short(prompts: list[str], seen: int) -> list[dict[str, Any]]:
    choices = [{"index": i, "text": job_of(p)} for i, p in enumerate(prompts)]
    return choices if seen > 1 else [c for c in choices if c["index"] not in (2, 5)]


async def test_jobs_missing_from_an_answer_are_retried_and_the_others_kept() -> None:
    outcomes, requests = await run_against(first_answer_short, 8)
    assert outcomes == [f"j{i}" for i in range(8)]
    assert requests[0] == [f"job j{i} ANSWER: j{i}" for i in range(8)]
    assert sorted(job_of(p) for r in requests[1:] for p in r) == ["j2", "j5"]


async def test_an_embedding_per_token_fails_its_job_not_the_router() -> None:
    """llama-cpp-python's server without pooling answers one vector per token."""

    def per_token(_request: web.Request, body: Any) -> tuple[int, Any]:
        if body is not None and "input" in body:
            return 200, {"data": [{"index": 0, "embedding": [[0.1, 0.2], [0.3, 0.4]]}]}
        return 200, {"choices": [{"index": 0, "text": "ok"}]}

    info = EngineInfo(models=["m"], capabilities=["embeddings", "completions"], healthy=True)
    async with scripted_engine(per_token) as url:
        client = EngineClient("tokens", url)
        handle = EngineHandle(name="tokens", client=client, info=info, max_requests=2)
        try:
            async with asyncio.timeout(10), Router([handle]) as router:
                with pytest.raises(EngineMalformedAnswer, match="not one list of numbers"):
                    await router.submit(InferenceRequest(kind="embeddings", input=["hi"]))
                after = await router.submit(InferenceRequest(kind="completions", prompt="x"))
        finally:
            await client.aclose()
    assert after.text == "ok"


async def test_embeddings_of_one_text_each_share_a_request(
    connect: Connect, recorder: ListRecorder
) -> None:
    """The embedder asks one text at a time; the engine gets them as one input list."""
    async with LoopbackEngine() as engine:
        handle = dataclasses.replace(await connect(engine), max_batch_size=8, batch_window_s=0.05)
        texts = [f"text number {i}" for i in range(10)]
        async with asyncio.timeout(10), Router([handle], recorder) as router:
            together = await asyncio.gather(
                *(router.submit(InferenceRequest(kind="embeddings", input=[t])) for t in texts)
            )
            alone = [
                await router.submit(InferenceRequest(kind="embeddings", input=[t]), use_cache=False)
                for t in texts[:2]
            ]
    inputs = [body["input"] for path, body in engine.stats.recorded]
    assert inputs == [texts[:8], texts[8:], texts[:1], texts[1:2]]
    assert [a.embedding for a in together[:2]] == [a.embedding for a in alone]
    assert len({tuple(a.embedding or ()) for a in together}) == 10
    batched = [c for c in recorder.calls if c.batch_size == 8]
    assert len(batched) == 8
    assert all(len(c.response["data"]) == 1 for c in batched if c.response)
    assert [c.request["input"] for c in batched] == [[t] for t in texts[:8]]
