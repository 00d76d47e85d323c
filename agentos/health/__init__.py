"""Daemons that report health: heartbeats, last success, failures in a row, and alerts.

A *daemon* is a perpetual or scheduled agent. The runtime that drives one keeps its row
of ``agent_health`` (:mod:`~agentos.health.board`): a heartbeat every few seconds, the
next fire, how its last run ended, its last success and its failures in a row. Alerts
(:mod:`~agentos.health.alerts`, ``alerts:`` in config.yaml) run a command or POST to a
webhook when an agent fails N runs in a row or misses a fire, and each is recorded in
``alerts``, sent or not. ``agentos status`` (:mod:`~agentos.health.status`) reads it all,
and with ``--alert`` is the watchdog that alerts about daemons whose process is gone: a
dead process cannot say so itself.
"""
