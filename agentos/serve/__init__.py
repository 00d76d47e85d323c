"""``agentos serve``: the router as an OpenAI-compatible endpoint, and runs over HTTP.

:mod:`~agentos.serve.service` starts everything and shuts it down; :mod:`~agentos.serve.app`
holds the routes; :mod:`~agentos.serve.openai_api` the OpenAI API; :mod:`~agentos.serve.runs`
the runs API; :mod:`~agentos.serve.clients` client keys and priorities.
"""
