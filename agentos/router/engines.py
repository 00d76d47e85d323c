"""Engines from config: clients for remote endpoints, started servers for local ones.

``open_engines`` is an async context manager: on the way in it starts every local server
and detects what each engine serves; on the way out (also on error and cancellation) it
closes every client and stops every server it started, so no server outlives agentos.
With ``lazy_local`` (what ``agentos run`` uses), a local engine's server is started only
when the router sends it its first request: a run whose answers all come from the cache,
or go to other engines, never loads the local model. What such an engine serves is known
from its config until then (its model name; chat and completions, embeddings when
enabled; prompt lists when the server is llama-server).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from agentos.errors import AgentosError, LocalEngineError
from agentos.router import chat_template
from agentos.router.chat_template import ChatTemplate, ChatTemplateError
from agentos.router.client import EngineClient, EngineInfo
from agentos.router.local_server import LocalServer, bundled_model_path
from agentos.router.probe import probe_engine
from agentos.router.router import EngineHandle, Router, RouterSettings
from agentos.spec.config import Config, LocalEngineConfig, OpenAIEngineConfig
from agentos.store import Store


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000.0


def router_settings(config: Config) -> RouterSettings:
    """The router's settings from config.yaml's ``router:`` section."""
    r = config.router
    return RouterSettings(
        aging_s=r.aging_s,
        batch_window_s=r.batch_window_ms / 1000.0,
        deadline_s=r.deadline_s,
        failure_threshold=r.failure_threshold,
        cooldown_s=r.cooldown_s,
        cooldown_max_s=r.cooldown_max_s,
        failover_attempts=r.failover_attempts,
        max_answer_bytes=r.max_answer_bytes,
    )


def recording_router(
    engines: list[EngineHandle],
    store: Store,
    config: Config,
    *,
    notices: Callable[[str], None] | None = None,
) -> Router:
    """The router of a runtime (``agentos run``, ``agentos ask``) over ``engines``: it
    records every call in ``store``, serves from the response cache when config.yaml
    keeps one, with the settings of its ``router:`` section."""
    from agentos.router.cache import ResponseCache, parse_duration
    from agentos.router.recording import StoreCallRecorder

    cache = None
    if config.cache.enabled:
        ttl = parse_duration(config.cache.ttl) if config.cache.ttl else None
        cache = ResponseCache(store, ttl_s=ttl)
    return Router(
        engines,
        recorder=StoreCallRecorder(store),
        settings=router_settings(config),
        cache=cache,
        notices=notices,
    )


def effective_engines(config: Config) -> list[LocalEngineConfig | OpenAIEngineConfig]:
    """The configured engines, or the bundled local engine when none are configured."""
    if config.engines:
        return list(config.engines)
    return [LocalEngineConfig(type="local")]


async def find_chat_template(
    cfg: LocalEngineConfig | OpenAIEngineConfig,
    client: EngineClient,
    info: EngineInfo,
    model_path: Path | None = None,
    *,
    ask_engine: bool = True,
) -> ChatTemplate | None:
    """The chat template that lets this engine take chat jobs as batched prompts: from
    config, else the GGUF metadata (local engines), else ``GET /props`` (unless not
    ``ask_engine``); None where the engine takes no prompt lists, ``batch_chat`` is off,
    or no template is to be had."""
    if not (cfg.batch_chat and info.prompt_batching):
        return None
    try:
        if cfg.chat_template:
            return chat_template.from_setting(cfg.chat_template)
        if model_path is not None:
            found = await asyncio.to_thread(chat_template.from_gguf, model_path)
            if found is not None:
                return found
        if not ask_engine:
            return None
        props = await client.props()
        return chat_template.from_props(props, f"{cfg.name} /props") if props else None
    except ChatTemplateError as exc:
        raise AgentosError(f"engine '{cfg.name}': {exc.message}") from None


@contextlib.asynccontextmanager
async def open_local_engine(
    cfg: LocalEngineConfig,
    *,
    log_dir: Path | None = None,
    request_timeout: float | None = None,
    lazy: bool = False,
) -> AsyncIterator[EngineHandle]:
    model_path = Path(cfg.model_path).expanduser() if cfg.model_path else bundled_model_path()
    if lazy and not model_path.is_file():
        raise LocalEngineError(
            f"local engine '{cfg.name}': the model file {model_path} does not exist"
        )
    server = LocalServer(
        name=cfg.name,
        model_path=model_path,
        model_alias=cfg.model_name,
        server=cfg.server,
        port=cfg.port,
        n_ctx=cfg.n_ctx,
        n_parallel=cfg.n_parallel,
        extra_args=cfg.extra_args,
        embeddings=cfg.embeddings,
        startup_timeout=cfg.startup_timeout,
        log_path=(log_dir / f"engine-{cfg.name}.log") if log_dir else None,
    )
    if lazy:
        async with _started_on_first_use(cfg, server, model_path, request_timeout) as handle:
            yield handle
        return
    async with server:
        watcher = asyncio.create_task(server.watch(), name=f"watch-{cfg.name}")
        client = _local_client(cfg, server.base_url, request_timeout)
        try:
            info = await client.detect([cfg.model_name], prompt_batching=server.serves_prompt_lists)
            template = await find_chat_template(cfg, client, info, model_path)
            handle = _handle(cfg, client, info, template)
            handle.server_pid = lambda: server.pid
            yield handle
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await client.aclose()


@contextlib.asynccontextmanager
async def _started_on_first_use(
    cfg: LocalEngineConfig,
    server: LocalServer,
    model_path: Path,
    request_timeout: float | None,
) -> AsyncIterator[EngineHandle]:
    """A local engine whose server starts when the router first needs it (module
    docstring); on the way out its server is stopped if it was started."""
    # the URL has no port until the server is started
    client = _local_client(cfg, f"http://{server.host}:0", request_timeout)
    capabilities = ["completions", "chat"] + (["embeddings"] if cfg.embeddings else [])
    info = EngineInfo(
        models=[cfg.model_name],
        capabilities=capabilities,
        healthy=True,
        detail="starts when a request needs it",
        prompt_batching=server.serves_prompt_lists,
    )
    template = None
    if cfg.chat_template or info.prompt_batching:
        template = await find_chat_template(cfg, client, info, model_path, ask_engine=False)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(client.aclose)

        async def start() -> None:
            await stack.enter_async_context(server)
            watcher = asyncio.create_task(server.watch(), name=f"watch-{cfg.name}")
            stack.push_async_callback(_cancelled, watcher)
            client.base_url = server.base_url
            handle.stats.endpoint = server.base_url
            found = await client.detect([cfg.model_name], prompt_batching=info.prompt_batching)
            if not found.healthy:
                await server.stop()
                raise LocalEngineError(
                    f"local engine '{cfg.name}' started but does not answer: {found.detail}"
                )
            handle.info = found
            if handle.chat_template is None:
                handle.chat_template = await find_chat_template(cfg, client, found, model_path)

        handle = _handle(cfg, client, info, template, starter=start)
        handle.server_pid = lambda: server.pid
        try:
            yield handle
        finally:
            await handle.stop_starting()


def _local_client(
    cfg: LocalEngineConfig, base_url: str, request_timeout: float | None
) -> EngineClient:
    return EngineClient(
        cfg.name,
        base_url,
        timeout=request_timeout or cfg.timeout,
        max_connections=max(cfg.max_requests, 1) + 2,
        structured_output=True,
    )


def _handle(
    cfg: LocalEngineConfig | OpenAIEngineConfig,
    client: EngineClient,
    info: EngineInfo,
    template: ChatTemplate | None,
    *,
    starter: Callable[[], Awaitable[None]] | None = None,
) -> EngineHandle:
    """The router's handle of the engine of ``cfg``, answered by ``client``."""
    return EngineHandle(
        name=cfg.name,
        client=client,
        info=info,
        max_requests=cfg.max_requests,
        max_batch_size=cfg.max_batch_size,
        weight=cfg.weight,
        kind=cfg.type,
        prompt_batching=info.prompt_batching,
        batch_window_s=_seconds(cfg.batch_window_ms),
        chat_template=template,
        starter=starter,
    )


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@contextlib.asynccontextmanager
async def open_remote_engine(
    cfg: OpenAIEngineConfig, *, request_timeout: float | None = None
) -> AsyncIterator[EngineHandle]:
    client = EngineClient(
        cfg.name,
        cfg.base_url,
        api_key=cfg.api_key.get_secret_value() if cfg.api_key else None,
        timeout=request_timeout or cfg.timeout,
        headers=cfg.headers,
        max_connections=max(cfg.max_requests, 1) + 2,
        structured_output=cfg.structured_output,
    )
    try:
        info: EngineInfo = await client.detect(
            list(cfg.models) or None, prompt_batching=cfg.prompt_batching
        )
        template = await find_chat_template(cfg, client, info)
        yield _handle(cfg, client, info, template)
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def open_engines(
    config: Config,
    *,
    only: set[str] | None = None,
    log_dir: Path | None = None,
    lazy_local: bool = False,
) -> AsyncIterator[list[EngineHandle]]:
    """Start and detect the engines (all, or those named in ``only``), one after another;
    with ``lazy_local``, local engines start on their first request instead."""
    wanted = [e for e in effective_engines(config) if only is None or e.name in only]
    async with contextlib.AsyncExitStack() as stack:
        timeout = config.router.request_timeout

        async def enter(cfg: LocalEngineConfig | OpenAIEngineConfig) -> EngineHandle:
            if isinstance(cfg, LocalEngineConfig):
                return await stack.enter_async_context(
                    open_local_engine(
                        cfg, log_dir=log_dir, request_timeout=timeout, lazy=lazy_local
                    )
                )
            return await stack.enter_async_context(open_remote_engine(cfg, request_timeout=timeout))

        handles = [await enter(cfg) for cfg in wanted]
        yield handles


async def describe_engines(
    handles: Sequence[EngineHandle], *, probe: bool = False
) -> list[dict[str, Any]]:
    """What ``agentos engines`` shows of each engine (its ``--json`` rows): endpoint,
    models, capabilities, batching, health and limits. With ``probe``, each row also has
    the :func:`~agentos.router.probe.probe_engine` report of a healthy engine that serves
    completions, or ``None`` for one that is not probed (one engine after another)."""
    rows = []
    for h in handles:
        row: dict[str, Any] = {
            "name": h.name,
            "type": h.kind,
            "endpoint": h.client.base_url,
            "models": h.info.models,
            "capabilities": h.info.capabilities,
            "prompt_batching": h.prompt_batching,
            "chat_template": h.chat_template.source if h.chat_template else None,
            "healthy": h.healthy,
            "detail": h.info.detail,
            "max_requests": h.max_requests,
            "max_batch_size": h.max_batch_size,
        }
        if probe and h.healthy and "completions" in h.info.capabilities:
            report = await probe_engine(
                h.client, h.info.models[0], prompt_batching=h.prompt_batching
            )
            row["probe"] = dataclasses.asdict(report)
        elif probe:
            row["probe"] = None
        rows.append(row)
    return rows
