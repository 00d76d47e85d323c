"""Every error agentos raises on purpose, each with a message a user can act on.

Library code raises these and never exits; ``agentos.cli`` is the one boundary that turns
them into a short red panel on stderr and exit code 2 (``AGENTOS_RAISE_ERRORS=1``
re-raises them for debugging).

The tree::

    AgentosError
    ├── SpecError                 agents.yaml / config.yaml: names file, line and key
    ├── StoreError                the SQLite database
    │   ├── SchemaTooNewError     a database written by a newer agentos
    │   └── StoreFailure          the storage refuses writes (disk full, I/O error):
    │                             work stops, and the command exits 1, not 2
    ├── NoEngineError             no configured engine serves the model / capability
    ├── LocalEngineError          the bundled local server cannot start or stay up
    ├── ParseError                an answer that does not match the response format
    ├── ClusterError              a Ray cluster that cannot be used (not installed, no
    │                             answer at its address, no node to run on)
    └── EngineError               one failed request to one engine; the router tells
        │                         these apart to decide whether and when to retry
        ├── EngineTimeout         no answer in time                      (transient)
        ├── EngineConnectionError refused, reset, dropped connection     (transient)
        ├── EngineStatusError     an HTTP error status; 5xx transient, 429 rate-limited
        │                         with ``retry_after``, other 4xx never retried
        └── EngineMalformedAnswer 2xx whose body is not the promised JSON (transient)
"""

from __future__ import annotations


class AgentosError(Exception):
    """Base of every error that agentos reports to its user."""

    title = "agentos error"
    exit_code = 2
    """What ``agentos`` exits with when this error ends a command: 2, bad input."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ClusterError(AgentosError):
    """A Ray cluster that ``agentos run --cluster`` cannot use."""

    title = "cluster error"


class SpecError(AgentosError):
    """An agents file or config file that cannot be used as written."""

    title = "invalid input"

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        self.file = file
        self.line = line
        self.key = key
        where = ""
        if file is not None:
            where = file if line is None else f"{file}:{line}"
        parts = [p for p in (where, f"key '{key}'" if key else "") if p]
        prefix = ", ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.reason = message


class StoreError(AgentosError):
    """The database cannot be opened, migrated or written."""

    title = "database error"


class SchemaTooNewError(StoreError):
    """The database was migrated by a newer agentos than this one."""


class StoreFailure(StoreError):
    """The database file stopped taking writes (disk full, I/O error, a file that became
    read-only): not the user's input, so a command it ends exits 1, a failed run."""

    title = "database write failed"
    exit_code = 1


class NoEngineError(AgentosError):
    """No engine can serve a request (model or capability not available anywhere)."""

    title = "no engine"


class LocalEngineError(AgentosError):
    """The local inference server could not be started or kept running."""

    title = "local engine"


class ParseError(AgentosError):
    """A model answer that could not be repaired into the agent's response format."""

    title = "unparseable answer"


class EngineError(AgentosError):
    """One request to one engine failed; subclasses say how."""

    title = "engine error"

    def __init__(self, message: str, *, engine: str = "") -> None:
        self.engine = engine
        super().__init__(f"engine '{engine}': {message}" if engine else message)


class EngineTimeout(EngineError):
    """The engine did not answer within the request timeout."""


class EngineConnectionError(EngineError):
    """The engine could not be reached, or dropped the connection mid-request."""


class EngineStatusError(EngineError):
    """The engine answered with an HTTP error status."""

    def __init__(
        self,
        message: str,
        *,
        engine: str = "",
        status: int,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.retry_after = retry_after
        super().__init__(message, engine=engine)


class EngineMalformedAnswer(EngineError):
    """The engine answered 2xx with a body that is not the OpenAI-shaped JSON promised."""
