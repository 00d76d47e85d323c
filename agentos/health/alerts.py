"""Alerts: which rules an event sets off, how each is delivered, and its record.

An alert goes to every rule of ``alerts:`` in config.yaml that watches the agent and the
kind of event: a shell command (the alert as JSON on stdin and in ``AGENTOS_ALERT_*``
variables) and/or a webhook (POSTed as JSON, with the message in ``text``). Each delivery
is one row of ``alerts``: ``sent``, or ``failed`` with the reason (a command's exit status
and the end of its stderr, a webhook's HTTP status or connection error). A webhook's
address is recorded without its path, which often holds the hook's secret.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from agentos.ids import new_id
from agentos.redaction import redact
from agentos.spec.config import AlertConfig
from agentos.store import Store
from agentos.store.writer import Insert

AlertKind = Literal["failures", "missed", "stopped"]


@dataclass(frozen=True)
class Alert:
    """Something about one agent that someone should know."""

    agent: str
    kind: AlertKind
    message: str
    ref: str
    """What it is about (``failures:RUN_ID``, ``missed:FIRE_TIME``): one thing is alerted
    once (:meth:`Alerts.already_sent`)."""
    run_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "kind": self.kind,
            "message": self.message,
            "text": f"agentos: {self.message}",
            "run_id": self.run_id,
            "host": socket.gethostname(),
            "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **self.details,
        }


def target_of(rule: AlertConfig, channel: str) -> str:
    if channel == "command":
        return "command"
    parts = urlsplit(rule.webhook or "")
    return (
        f"webhook {parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"
    )


class Alerts:
    """The rules of config.yaml's ``alerts:``, and their deliveries, recorded in ``store``."""

    def __init__(self, store: Store, rules: list[AlertConfig]) -> None:
        self.store = store
        self.rules = rules

    def rules_for(self, alert: Alert) -> list[AlertConfig]:
        out = []
        for rule in self.rules:
            if rule.agents and alert.agent not in rule.agents:
                continue
            if alert.kind == "failures" and rule.failures is None:
                continue
            if alert.kind in ("missed", "stopped") and not rule.missed:
                continue
            out.append(rule)
        return out

    def already_sent(self, alert: Alert) -> bool:
        row = self.store.db.execute(
            "SELECT 1 FROM alerts WHERE agent = ? AND kind = ? AND ref = ? LIMIT 1",
            [alert.agent, alert.kind, alert.ref],
        ).fetchone()
        return row is not None

    async def send(self, alert: Alert, rules: list[AlertConfig] | None = None) -> list[str]:
        """Deliver ``alert`` by every rule that watches it (or ``rules``); the status of
        each delivery, as recorded."""
        statuses = []
        for rule in self.rules_for(alert) if rules is None else rules:
            for channel in ("command", "webhook"):
                if getattr(rule, channel) is None:
                    continue
                error = await deliver(rule, channel, alert)
                status = "sent" if error is None else "failed"
                statuses.append(status)
                self.store.submit(
                    Insert(
                        "alerts",
                        {
                            "id": new_id(),
                            "agent": alert.agent,
                            "kind": alert.kind,
                            "message": alert.message,
                            "ref": alert.ref,
                            "target": target_of(rule, channel),
                            "status": status,
                            "error": redact(error) if error else None,
                            "run_id": alert.run_id,
                            "created_at": time.time(),
                        },
                    )
                )
        return statuses


async def deliver(rule: AlertConfig, channel: str, alert: Alert) -> str | None:
    """Send ``alert`` by ``rule``'s command or webhook; None when it went, else why not."""
    payload = alert.payload()
    if channel == "webhook":
        assert rule.webhook is not None
        try:
            async with httpx.AsyncClient(timeout=rule.timeout_s) as client:
                answer = await client.post(rule.webhook, json=payload)
        except httpx.HTTPError as exc:
            return f"webhook: {type(exc).__name__}: {exc}"
        if answer.is_success:
            return None
        return f"webhook answered HTTP {answer.status_code}"
    assert rule.command is not None
    env = {
        **os.environ,
        "AGENTOS_ALERT_AGENT": alert.agent,
        "AGENTOS_ALERT_KIND": alert.kind,
        "AGENTOS_ALERT_MESSAGE": alert.message,
        "AGENTOS_ALERT_RUN_ID": alert.run_id or "",
    }
    try:
        process = await asyncio.create_subprocess_shell(
            rule.command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
    except OSError as exc:
        return f"command could not start: {exc}"
    try:
        _, err = await asyncio.wait_for(
            process.communicate(json.dumps(payload).encode()), rule.timeout_s
        )
    except TimeoutError:
        process.kill()
        await process.wait()
        return f"command took longer than {rule.timeout_s:g} s and was killed"
    if process.returncode == 0:
        return None
    tail = err.decode("utf-8", "replace").strip().splitlines()[-3:]
    return f"command exited {process.returncode}" + (f": {' / '.join(tail)}" if tail else "")
