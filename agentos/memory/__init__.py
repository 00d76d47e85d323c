"""Semantic memory: everything agentos has seen, searchable by meaning.

- ``embedder.py``: ``background[embeddings]``, the system process that embeds every run
  output, model answer and sink item through the router at background priority.
- ``sources.py``: which rows those are, and their text.
- ``types.py``: what every vector store shares (records, hits, the interface, errors);
  ``vectors.py``: the SQLite vector store (the default), ``qdrant.py``: the Qdrant one;
  ``extension.py``: sqlite-vec where Python's sqlite3 cannot load extensions.
- ``backlog.py``: embedding what the process has not reached, while someone waits
  (``agentos embed``, ``agentos search``), and ``agentos engines``' line about it.
- ``search.py``: ``search()`` (``agentos search``) and the ``memory_search`` tool.
- ``config.py``: config.yaml's ``vector_store:`` and ``embeddings:`` sections.
"""

from agentos.memory.backlog import (
    BacklogStatus,
    ProgressBar,
    backlog_status,
    embed_backlog,
    embed_database,
    memory_summary,
    open_memory,
)
from agentos.memory.config import EmbeddingsConfig, VectorStoreConfig
from agentos.memory.embedder import (
    PROCESS_NAME,
    Embedder,
    EmbeddingProgress,
    embed_text,
    embedding_model,
)
from agentos.memory.search import Memory, hit_to_json, memory_search, search, search_database
from agentos.memory.vectors import (
    SqliteVectorStore,
    VectorDimensionError,
    VectorHit,
    VectorRecord,
    VectorSpace,
    VectorStore,
    VectorStoreError,
    open_vector_store,
)

__all__ = [
    "PROCESS_NAME",
    "BacklogStatus",
    "Embedder",
    "EmbeddingProgress",
    "EmbeddingsConfig",
    "Memory",
    "ProgressBar",
    "SqliteVectorStore",
    "VectorDimensionError",
    "VectorHit",
    "VectorRecord",
    "VectorSpace",
    "VectorStore",
    "VectorStoreConfig",
    "VectorStoreError",
    "backlog_status",
    "embed_backlog",
    "embed_database",
    "embed_text",
    "embedding_model",
    "hit_to_json",
    "memory_search",
    "memory_summary",
    "open_memory",
    "open_vector_store",
    "search",
    "search_database",
]
