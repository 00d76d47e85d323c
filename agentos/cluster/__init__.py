"""agentos on a Ray cluster: a prototype of the pieces (issue 15; docs/cluster.md).

Nothing outside this package imports it, and it is the only code that imports ``ray``
(an optional extra), so ``agentos --help`` and one-machine runs never pay for Ray.

- :mod:`agentos.cluster.records`: how records made on other nodes reach the driver's one
  Store writer (``RecordQueue`` actor, ``RemoteStore`` in workers, ``RecordDrain`` in
  the driver).
- :mod:`agentos.cluster.router_actor`: the router as one async Ray actor, and the
  ``ModelRouter`` proxy that runs on workers hold.
- :mod:`agentos.cluster.executor`: a run executed as a Ray task with the agent's resource
  request, and the driver side that starts it.
"""
