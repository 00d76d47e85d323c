"""One request for several jobs, and its answer mapped back to each of them.

An engine that takes a list of prompts in one ``/v1/completions`` request gets the
prompts of a batch in one body; the answer's choices carry an ``index`` that says which
prompt each one answers. Everything else — model, sampling parameters, response format —
is the same for every job of a batch by construction (``queue.batch_key``), so the body
of the first job *is* the body of every job, with only the prompt differing.

Chat jobs for an engine that knows the model's chat template (``EngineHandle.as_prompt``)
go the same way: each conversation is rendered into its prompt with the template, and the
template's end-of-turn tokens are added to ``stop``. Such a job goes as a completions
prompt also when it happens to be alone, so that its answer does not depend on whether it
shared a request.

Seeds: with temperature > 0 a job asks for sample ``k`` of its request, sent as the
``seed``. An OpenAI-style request has one seed for all its prompts, and under one seed
identical prompts get identical samples, so a batch whose jobs ask for different samples
is sent without a seed and the engine samples each prompt on its own. The response cache
(keyed by sample) and the record keep each sample reproducible either way.
"""

from __future__ import annotations

from typing import Any

from agentos.errors import EngineMalformedAnswer
from agentos.router.chat_template import ChatTemplate
from agentos.router.client import answer_text, usage_tokens
from agentos.router.handle import EngineHandle
from agentos.router.jobs import InferenceRequest, Job


def batch_body(
    engine: EngineHandle, jobs: list[Job], model: str
) -> tuple[str, dict[str, Any], ChatTemplate | None]:
    """The path and body of the one request that serves ``jobs`` on ``engine``, and the
    chat template that turned chat jobs into its prompts (None when none did)."""
    first = jobs[0].request
    template = engine.chat_template if engine.as_prompt(first) else None
    if template is not None:
        prompts = [template.render(job.request.messages or []) for job in jobs]
        request = InferenceRequest(
            kind="completions",
            model=first.model,
            params=template.completion_params(first.params),
            json_schema=first.json_schema,
        )
        path, body = engine.client.build_body(request, model)
    else:
        path, body = engine.client.build_body(first, model)
        if len(jobs) > 1 and first.kind == "embeddings":
            body["input"] = [text for job in jobs for text in job.request.input or ()]
            return path, body, None
        if len(jobs) > 1:
            if first.kind != "completions":
                raise ValueError(f"only completions requests are batched, not {first.kind}")
            prompts = [job.request.prompt or "" for job in jobs]
    if (
        first.params.get("temperature")
        and first.kind != "embeddings"
        and all(job.request.sample == first.sample for job in jobs)
    ):
        # explicit temperature > 0: the sample index picks a reproducible sample, where
        # the whole request asks for one
        body.setdefault("seed", first.sample)
    if template is not None or len(jobs) > 1:
        body["prompt"] = prompts if len(jobs) > 1 else prompts[0]
    return path, body, template


def job_body(body: dict[str, Any], index: int, size: int) -> dict[str, Any]:
    """The part of a batch request that is one job's, as recorded for that job."""
    if size == 1:
        return body
    own = dict(body)
    if "input" in body:
        own["input"] = [body["input"][index]]
    else:
        own["prompt"] = body["prompt"][index]
    return own


def split_answers(
    path: str,
    response: dict[str, Any],
    size: int,
    engine: str,
    template: ChatTemplate | None = None,
) -> list[tuple[str | None, dict[str, Any] | None]]:
    """For each of ``size`` prompts, its answer text and choice (None where missing); for
    embeddings, each input's ``data`` item (and an empty text).

    Choices are mapped by their ``index``; a batch of one (and embeddings, whose items
    come in input order) also accepts a choice without one. An index out of range or
    given twice makes the whole answer malformed, because then no mapping can be
    trusted.
    """
    embeddings = path.endswith("embeddings")
    choices = response["data" if embeddings else "choices"]
    out: list[tuple[str | None, dict[str, Any] | None]] = [(None, None)] * size
    seen: set[int] = set()
    for pos, choice in enumerate(choices):
        if not isinstance(choice, dict):
            raise EngineMalformedAnswer("a choice is not an object", engine=engine)
        index = choice.get("index", pos if size == 1 or embeddings else None)
        if not isinstance(index, int) or not 0 <= index < size or index in seen:
            raise EngineMalformedAnswer(
                f"choice index {index!r} does not match a prompt of the batch of {size}",
                engine=engine,
            )
        seen.add(index)
        if embeddings:
            out[index] = ("", choice)
            continue
        text = answer_text(path, {"choices": [choice]}, engine)
        out[index] = (template.strip_stop(text) if template else text, choice)
    return out


def share_usage(response: dict[str, Any], size: int) -> tuple[int, int]:
    """A batch's token usage split evenly over its jobs (engines report one total; a
    count that is not a sane integer counts as 0, see ``client.token_count``)."""
    prompt, completion = usage_tokens(response)
    return prompt // size, completion // size
