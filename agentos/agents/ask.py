"""``agentos ask "..."``: one request, end to end, through one planner run.

The request becomes the prompt of a planner agent (:func:`ask_spec`) with the built-in
tools, which :func:`ask` runs against the configured engines (the bundled local model when
none are configured), with the response cache and the semantic memory that ``agentos
run`` gives agents, and everything recorded in the store. How a plan is made, checked
and run is :mod:`agentos.agents.planner`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentos.agents.base import RunContext
from agentos.agents.planner import PlannerRun, PlanOutcome
from agentos.router.jobs import InferenceRequest
from agentos.scheduler.display import Display
from agentos.spec.agents import AgentSpec
from agentos.spec.config import Config
from agentos.tools.registry import ToolRegistry

ASK_TOOLS = ("calculator", "todo", "file_writer")
"""The tools of ``agentos ask`` (``http_get`` and ``web_fetch`` are added when the config
allows a host, ``web_search`` when it names a search backend)."""


def ask_spec(
    request: str, config: Config, tools: Sequence[str] | None = None, *, fresh: bool = False
) -> AgentSpec:
    """The planner agent ``agentos ask`` runs: the request as its prompt (passed as a
    variable, so braces in it are text), the built-in tools, greedy decoding (the plan a
    small model gets right most often, and the same plan for the same request); with
    ``fresh``, the plan is asked of the model, not looked up in the response cache."""
    chosen = list(tools) if tools is not None else list(ASK_TOOLS)
    if tools is None and config.tools.http.allow_hosts:
        chosen += ["http_get", "web_fetch"]
    search = config.tools.web_search
    if tools is None and (search.searxng_url or search.backend):
        chosen.append("web_search")
    return AgentSpec(
        name="ask",
        kind="planner",
        prompt="{{ request }}",
        vars={"request": request},
        tools=chosen,
        temperature=0.0,
        max_tokens=400,
        cache=not fresh,
    )


async def ask(
    request: str,
    *,
    config: Config,
    store_path: Path,
    display: Display,
    tools: Sequence[str] | None = None,
    log_dir: Path | None = None,
    fresh: bool = False,
) -> PlanOutcome:
    """``agentos ask "..."``: plan the request with the built-in tools (or ``tools``), run
    the plan, and return how it went; everything is recorded in ``store_path``.

    A plan served from the response cache (the same request asked before) does not run
    its steps that change things again (see :meth:`PlannerRun._not_again`); ``fresh``
    plans anew, without the cache, and runs the plan.

    Starts the configured engines (the bundled local model when none are configured) and
    stops them again. Raises :class:`~agentos.errors.NoEngineError` before recording
    anything when no engine serves the model.
    """
    from agentos.router.engines import open_engines, recording_router
    from agentos.router.router import Router
    from agentos.store import Store

    spec = ask_spec(request, config, tools, fresh=fresh)
    async with open_engines(config, log_dir=log_dir) as engines:
        Router(engines).check_servable(
            InferenceRequest(kind="chat", model=spec.model), engine=spec.engine
        )
        with Store(store_path) as store:
            async with recording_router(engines, store, config) as router:
                memory = ask_memory(config, engines, store, router)
                context = RunContext(
                    router=router,
                    store=store,
                    display=display,
                    tools=ToolRegistry(config.tools, store=store),
                    config=config,
                    memory=memory,
                )
                try:
                    hint = "To do it again on purpose, ask with --fresh"
                    outcome = await PlannerRun(spec, context, fresh_hint=hint).run()
                finally:
                    if memory is not None:
                        memory.vectors.close()
            await store.aflush()
    return outcome


def ask_memory(config: Config, engines: Sequence[Any], store: Any, router: Any) -> Any:
    """The semantic memory ``memory_search`` reads in ``agentos ask``: the one ``agentos
    run`` gives its agents (the configured vector store, the embedding model an engine
    serves), or None when embeddings are off or no engine serves them (the tool then says
    so). ``ask`` embeds nothing itself: it searches what ``background[embeddings]`` of
    earlier runs of ``agentos run`` embedded."""
    from agentos.memory import Memory, embedding_model, open_vector_store

    if not config.embeddings.enabled:
        return None
    model = embedding_model(engines, config.embeddings.model)
    if model is None:
        return None
    return Memory(store, router, model, open_vector_store(config.vector_store, store))
