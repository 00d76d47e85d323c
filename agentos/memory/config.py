"""config.yaml's ``vector_store:`` and ``embeddings:`` sections live with the rest of the
config models; this module names them where the memory package looks for them."""

from agentos.spec.config import EmbeddingsConfig, VectorStoreConfig

__all__ = ["EmbeddingsConfig", "VectorStoreConfig"]
