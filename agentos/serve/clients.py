"""Who is asking, and at which priority.

With ``serve.keys`` in config.yaml, every request must carry one of the keys as
``Authorization: Bearer KEY`` (the openai SDK's ``api_key``); the key names the client.
Keys are compared by their SHA-256 digests, kept only in memory: the secret itself is
never stored, logged or shown (it is registered for redaction like every ``SecretStr`` of
config.yaml). Without keys (loopback only), a client names itself with
``X-Agentos-Client`` or is known by its user agent's product (``OpenAI``, ``llm``).

A request's priority class is, first that applies: the ``X-Agentos-Priority`` header, the
priority route it came by (``/background/v1/...``), its client's ``priority``, and
``serve.priority``. A client key's ``priority`` is also a ceiling: such a client may ask
for its class or a lower one, never a higher one (403).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from agentos.router.jobs import PRIORITY_RANK
from agentos.serve.errors import ApiError
from agentos.spec.config import ServeConfig

PRIORITY_HEADER = "x-agentos-priority"
CLIENT_HEADER = "x-agentos-client"
_NAME = re.compile(r"[^A-Za-z0-9_.@-]+")


@dataclass(frozen=True)
class Client:
    """One caller: its process name in ``top``, its default priority and its ceiling."""

    process: str
    priority: str
    ceiling: int | None = None
    """The best rank the client may ask for (a key's ``priority``); None: any."""


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


class Clients:
    """The configured client keys, and how a request is matched to its client."""

    def __init__(self, config: ServeConfig) -> None:
        self.default_priority = config.priority
        self.by_digest: dict[bytes, Client] = {}
        for key in config.keys:
            priority = key.priority or config.priority
            self.by_digest[_digest(key.key.get_secret_value())] = Client(
                process=f"client[{key.name}]",
                priority=priority,
                ceiling=PRIORITY_RANK[key.priority] if key.priority else None,
            )
        self._anonymous: dict[str, Client] = {}

    @property
    def required(self) -> bool:
        return bool(self.by_digest)

    def identify(self, authorization: str | None, name: str | None, agent: str | None) -> Client:
        """The client of a request from its ``Authorization``, ``X-Agentos-Client`` and
        ``User-Agent`` headers; 401 when keys are configured and none of them is given."""
        if self.by_digest:
            scheme, _, secret = (authorization or "").partition(" ")
            client = (
                self.by_digest.get(_digest(secret.strip()))
                if scheme.lower() == "bearer" and secret.strip()
                else None
            )
            if client is None:
                raise ApiError(
                    401,
                    "a valid client key is needed: send it as 'Authorization: Bearer KEY' "
                    "(the api_key of an OpenAI client); keys are in serve.keys of config.yaml"
                    if not authorization
                    else "the client key is not one of serve.keys in config.yaml",
                    code="invalid_api_key",
                )
            return client
        label = name or _product(agent) or "anonymous"
        client = self._anonymous.get(label)
        if client is None:
            clean = _NAME.sub("-", label)[:48] or "anonymous"
            client = Client(process=f"client[{clean}]", priority=self.default_priority)
            if len(self._anonymous) < 1000:  # names come from clients: bounded
                self._anonymous[label] = client
        return client

    def priority(self, client: Client, header: str | None, route: str | None) -> str:
        """The request's priority class (see the module docstring)."""
        asked = header.strip().lower() if header else route
        if asked is None:
            return client.priority
        if asked not in PRIORITY_RANK:
            raise ApiError(
                400,
                f"unknown priority class {asked!r} in X-Agentos-Priority "
                f"(one of {', '.join(PRIORITY_RANK)})",
                code="invalid_priority",
            )
        if client.ceiling is not None and PRIORITY_RANK[asked] < client.ceiling:
            raise ApiError(
                403,
                f"{client.process} may ask for priority {client.priority} or lower, not {asked}",
                code="priority_not_allowed",
            )
        return asked


def _product(agent: str | None) -> str | None:
    """The product of a User-Agent header (``OpenAI/Python 1.5`` → ``OpenAI``)."""
    if not agent:
        return None
    product = agent.split("/", 1)[0].split(" ", 1)[0].strip()
    return product or None
