"""The test engine as llama-server for chat templates: ``/props``, ChatML-rendered
completions prompts, the ``ANSWER:`` marker inside them, and ``stop`` strings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import jinja2
import pytest

from agentos.testing.answers import (
    CHATML_EOS,
    CHATML_TEMPLATE,
    answer_content,
    chatml_messages,
    cut_at_stop,
)
from agentos.testing.engine import CostModel, LoopbackEngine

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def render(messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    """The template rendered the way Hugging Face and llama.cpp render chat templates."""
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(CHATML_TEMPLATE).render(
        messages=messages, add_generation_prompt=add_generation_prompt
    )


CONVERSATION = [
    {"role": "system", "content": "You answer in one word. ANSWER: not the system's"},
    {"role": "user", "content": "Name a colour.\nANSWER: blue\nReply with JSON."},
]


@pytest.fixture
async def engine() -> AsyncIterator[LoopbackEngine]:
    cost = CostModel(slots=5)
    async with LoopbackEngine(models=("chatml-model", "other"), cost=cost) as running:
        yield running


@pytest.fixture
async def client(engine: LoopbackEngine) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=engine.url, timeout=5) as http:
        yield http


def test_the_template_renders_chatml() -> None:
    assert render(CONVERSATION) == (
        "<|im_start|>system\nYou answer in one word. ANSWER: not the system's<|im_end|>\n"
        "<|im_start|>user\nName a colour.\nANSWER: blue\nReply with JSON.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert render(CONVERSATION, add_generation_prompt=False).endswith("<|im_end|>\n")
    assert CHATML_EOS == "<|im_end|>"


async def test_props_look_like_llama_server(
    engine: LoopbackEngine, client: httpx.AsyncClient
) -> None:
    answer = await client.get("/props")
    assert answer.status_code == 200
    props = answer.json()
    assert props["chat_template"] == CHATML_TEMPLATE
    assert (props["bos_token"], props["eos_token"]) == ("", "<|im_end|>")
    assert props["total_slots"] == 5
    assert props["model_path"] == "chatml-model"
    engine.cost.slots = 7
    assert (await client.get("/props")).json()["total_slots"] == 7
    engine.faults.error_rate = 1.0  # /props never sees faults
    assert (await client.get("/props")).status_code == 200
    assert (await client.post("/props")).status_code == 405
    assert engine.stats.requests == 0


def test_the_router_reads_the_props_template() -> None:
    chat_template = pytest.importorskip("agentos.router.chat_template")
    props = {"chat_template": CHATML_TEMPLATE, "bos_token": "", "eos_token": CHATML_EOS}
    template = chat_template.from_props(props, "loopback /props")
    assert template.render(CONVERSATION) == render(CONVERSATION)
    assert CHATML_EOS in template.stop


def test_a_rendered_conversation_is_recognised() -> None:
    assert chatml_messages(render(CONVERSATION)) == CONVERSATION
    assert chatml_messages(render(CONVERSATION, add_generation_prompt=False)) is None
    assert chatml_messages("Name a colour. ANSWER: blue") is None
    assert chatml_messages(render(CONVERSATION) + "Sure, ") is None  # a prefilled answer


def test_the_marker_stops_at_the_end_of_turn() -> None:
    source = "<|im_start|>user\nPick one. ANSWER: red<|im_end|>\n<|im_start|>assistant\n"
    assert answer_content(b"k", source, None, False) == ("red", "stop")
    assert answer_content(b"k", "ANSWER: a b<|im_end|> c\nd", None, False) == ("a b", "stop")


def test_stop_strings_cut_the_answer() -> None:
    assert cut_at_stop("one two. three", [".", "two"], "length") == ("one ", "stop")
    assert cut_at_stop("one two", ["x"], "length") == ("one two", "length")


def completion_body(prompt: str | list[str], **extra: Any) -> dict[str, Any]:
    return {"model": "chatml-model", "prompt": prompt, **extra}


def chat_body(messages: list[dict[str, str]], **extra: Any) -> dict[str, Any]:
    return {"model": "chatml-model", "messages": messages, **extra}


async def test_a_converted_chat_job_gets_the_chat_answer(client: httpx.AsyncClient) -> None:
    """A chat job rendered through the template and sent as a completions prompt (with
    the template's stop string, as a router adds it) gets what the chat endpoint answers."""
    params = {"temperature": 0.7, "max_tokens": 16, "seed": 3}
    plain = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    answers = []
    for messages in (CONVERSATION, plain):
        chat = await client.post(CHAT, json=chat_body(messages, **params))
        expected = chat.json()["choices"][0]["message"]["content"]
        prompt = render(messages)
        body = completion_body([prompt], stop=[CHATML_EOS], **params)
        completion = (await client.post(COMPLETIONS, json=body)).json()
        assert completion["choices"][0]["text"] == expected
        answers.append(expected)
    assert answers[0] == "blue"
    assert len(answers[1].split()) >= 5


async def test_converted_prompts_batch_with_their_own_markers(client: httpx.AsyncClient) -> None:
    prompts = [
        render([{"role": "system", "content": "Sys."}, {"role": "user", "content": f"ANSWER: {i}"}])
        for i in range(5)
    ]
    body = completion_body(prompts, stop=["<|im_end|>"], temperature=0.7, max_tokens=16)
    choices = (await client.post(COMPLETIONS, json=body)).json()["choices"]
    assert [c["text"] for c in choices] == ["0", "1", "2", "3", "4"]
    assert all(c["finish_reason"] == "stop" for c in choices)


async def test_an_unrecognised_prompt_stops_its_marker_at_the_end_of_turn(
    client: httpx.AsyncClient,
) -> None:
    prompt = "<s>[user] Pick. ANSWER: green<|im_end|> and more [assistant]"
    body = completion_body(prompt)
    assert (await client.post(COMPLETIONS, json=body)).json()["choices"][0]["text"] == "green"


async def test_answers_never_contain_their_stop_strings(client: httpx.AsyncClient) -> None:
    """Stop strings cut answers of every kind: sentences, scripted ones and JSON."""
    for prompt in ("Say something.", "ANSWER: alpha, beta. gamma"):
        full = (await client.post(COMPLETIONS, json=completion_body(prompt))).json()
        text = full["choices"][0]["text"]
        stop = text.split()[1]
        cut = (await client.post(COMPLETIONS, json=completion_body(prompt, stop=[stop]))).json()
        [choice] = cut["choices"]
        assert stop not in choice["text"]
        assert text.startswith(choice["text"])
        assert choice["finish_reason"] == "stop"
    body = chat_body(
        [{"role": "user", "content": "who"}],
        stop="}",
        response_format={"type": "json_object"},
    )
    content = (await client.post(CHAT, json=body)).json()["choices"][0]["message"]["content"]
    assert content.startswith('{"answer": ') and "}" not in content


async def test_copies_of_a_prompt_are_sampled_apart_without_a_seed(
    client: httpx.AsyncClient,
) -> None:
    """A router batches an agent's attempts (samples of one conversation) without a seed;
    like a real engine, the test engine then samples each copy on its own."""
    prompt = render([{"role": "user", "content": "Say something."}])

    async def texts(**params: Any) -> list[str]:
        body = completion_body([prompt, "other", prompt, prompt], **params)
        return [c["text"] for c in (await client.post(COMPLETIONS, json=body)).json()["choices"]]

    sampled = await texts(temperature=0.7)
    assert len({sampled[0], sampled[2], sampled[3]}) == 3
    alone = await client.post(COMPLETIONS, json=completion_body([prompt], temperature=0.7))
    assert alone.json()["choices"][0]["text"] == sampled[0]
    two = await client.post(COMPLETIONS, json=completion_body([prompt], temperature=0.7, n=2))
    assert [c["text"] for c in two.json()["choices"]] == sampled[0:1] + sampled[2:3]
    assert (await texts())[0] != (await texts())[2]  # no temperature: the engine default, 1
    for params in ({"temperature": 0}, {"temperature": 0.7, "seed": 5}):
        same = await texts(**params)
        assert same[0] == same[2] == same[3], params
