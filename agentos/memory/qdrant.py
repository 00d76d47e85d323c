"""The Qdrant vector store: one collection per model and vector size.

Used when config.yaml says ``vector_store: {type: qdrant, url: …}`` (a server) or
``path: …`` (Qdrant's embedded local mode, which holds a lock on its folder: one process
at a time). ``qdrant-client`` is imported only here, so agentos does not pay for it unless
it is configured.

A collection is named ``PREFIX_MODEL_HASH_DIM``: the model name made safe for Qdrant, a
hash of the exact name (two names that read the same once made safe stay apart), and the
vector size. Point ids are UUIDs derived from (source, source id), so adding a record
again overwrites it. Each point's payload carries the record (source, run, agent, time,
text), so a search needs nothing from the database.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentos.memory.config import VectorStoreConfig
from agentos.memory.types import (
    VectorHit,
    VectorRecord,
    VectorSpace,
    VectorStoreError,
    check_dimension,
    check_vector,
)

_POINT_NAMESPACE = uuid.UUID("6f0c3f1e-5d2a-4c1b-9a57-0d6a1f3e9b42")
"""Namespace of the point ids (uuid5 of ``source/source_id``); never change it, or
re-embedded records would be stored twice."""

_UNSAFE = re.compile(r"[^a-z0-9]+")


def _import_qdrant() -> Any:
    try:
        import qdrant_client
    except ImportError:
        raise VectorStoreError(
            "vector_store type qdrant needs the qdrant-client package: pip install qdrant-client"
        ) from None
    return qdrant_client


def point_id(source: str, source_id: str) -> str:
    return str(uuid.uuid5(_POINT_NAMESPACE, f"{source}/{source_id}"))


class QdrantVectorStore:
    """A :class:`~agentos.memory.types.VectorStore` on Qdrant (``client`` is a
    ``qdrant_client.QdrantClient``; use :meth:`from_config` to make one from config)."""

    def __init__(self, client: Any, *, prefix: str = "agentos", where: str = "") -> None:
        qdrant = _import_qdrant()
        self.models = qdrant.models
        self.client = client
        self.prefix = prefix
        self.where = where
        self._known: set[str] = set()

    @classmethod
    def from_config(cls, config: VectorStoreConfig) -> QdrantVectorStore:
        qdrant = _import_qdrant()
        try:
            if config.path is not None:
                location = config.path
                if config.path != ":memory:":
                    location = str(Path(config.path).expanduser().resolve())
                if config.path == ":memory:":
                    client = qdrant.QdrantClient(location=":memory:")
                else:
                    client = qdrant.QdrantClient(path=config.path)
            else:
                location = str(config.url)
                key = config.api_key.get_secret_value() if config.api_key else None
                client = qdrant.QdrantClient(
                    url=config.url, api_key=key, timeout=int(config.timeout)
                )
        except Exception as exc:  # qdrant raises RuntimeError, ValueError, OSError …
            raise VectorStoreError(f"cannot open the Qdrant vector store: {exc}") from exc
        return cls(client, prefix=config.collection_prefix, where=location)

    @property
    def description(self) -> str:
        return f"qdrant ({self.where})" if self.where else "qdrant"

    @property
    def key(self) -> str:
        return f"qdrant:{self.where or id(self.client)}/{self.prefix}"

    # -- naming ----------------------------------------------------------------------------

    def _model_stem(self, model: str) -> str:
        safe = _UNSAFE.sub("-", model.lower()).strip("-")[:40] or "model"
        digest = hashlib.sha256(model.encode()).hexdigest()[:8]
        return f"{self.prefix}_{safe}_{digest}_"

    def collection(self, model: str, dim: int) -> str:
        """The collection holding the vectors of ``model`` that have ``dim`` dimensions."""
        return f"{self._model_stem(model)}{dim}"

    def _collections(self) -> list[str]:
        try:
            response = self.client.get_collections()
        except Exception as exc:
            raise VectorStoreError(f"Qdrant did not list its collections: {exc}") from exc
        return [c.name for c in response.collections]

    def _dims(self, model: str) -> list[int]:
        stem = self._model_stem(model)
        return sorted(
            int(name[len(stem) :])
            for name in self._collections()
            if name.startswith(stem) and name[len(stem) :].isdigit()
        )

    def _ensure(self, name: str, dim: int) -> None:
        if name in self._known:
            return
        if not self.client.collection_exists(name):
            self.client.create_collection(
                name,
                vectors_config=self.models.VectorParams(
                    size=dim, distance=self.models.Distance.COSINE
                ),
            )
        self._known.add(name)

    # -- the VectorStore interface ---------------------------------------------------------

    def add(self, model: str, records: Sequence[VectorRecord]) -> None:
        by_dim: dict[int, list[Any]] = {}
        for record in records:
            check_vector(record.vector)
            by_dim.setdefault(len(record.vector), []).append(
                self.models.PointStruct(
                    id=point_id(record.source, record.source_id),
                    vector=[float(x) for x in record.vector],
                    payload={
                        "model": model,
                        "source": record.source,
                        "source_id": record.source_id,
                        "run_id": record.run_id,
                        "agent": record.agent,
                        "created_at": record.created_at,
                        "text": record.text,
                    },
                )
            )
        for dim, points in by_dim.items():
            name = self.collection(model, dim)
            try:
                self._ensure(name, dim)
                self.client.upsert(name, points=points, wait=True)
            except Exception as exc:
                raise VectorStoreError(
                    f"Qdrant did not store {len(points)} vectors in {name}: {exc}"
                ) from exc

    def query(
        self, model: str, vector: Sequence[float], *, limit: int, agent: str | None = None
    ) -> list[VectorHit]:
        check_vector(vector)
        dim = len(vector)
        dims = self._dims(model)
        check_dimension(model, dim, dims)
        if dim not in dims or limit < 1:
            return []
        query_filter = None
        if agent is not None:
            query_filter = self.models.Filter(
                must=[
                    self.models.FieldCondition(
                        key="agent", match=self.models.MatchValue(value=agent)
                    )
                ]
            )
        name = self.collection(model, dim)
        try:
            response = self.client.query_points(
                name,
                query=[float(x) for x in vector],
                limit=limit,
                query_filter=query_filter,
                with_payload=True,
            )
        except Exception as exc:
            raise VectorStoreError(f"Qdrant did not answer a search of {name}: {exc}") from exc
        hits = []
        for point in response.points:
            payload = point.payload or {}
            hits.append(
                VectorHit(
                    source=str(payload.get("source", "")),
                    source_id=str(payload.get("source_id", "")),
                    text=str(payload.get("text", "")),
                    score=round(float(point.score), 6),
                    run_id=payload.get("run_id"),
                    agent=payload.get("agent"),
                    created_at=payload.get("created_at"),
                )
            )
        return hits

    def spaces(self, model: str | None = None) -> list[VectorSpace]:
        stem = self._model_stem(model) if model is not None else f"{self.prefix}_"
        found = []
        for name in sorted(self._collections()):
            head, _, dim = name.rpartition("_")
            if not name.startswith(stem) or not dim.isdigit():
                continue
            count = self.client.count(name, exact=True).count
            found.append(
                VectorSpace(model=model or self._model_of(name, head), dim=int(dim), count=count)
            )
        return found

    def _model_of(self, name: str, fallback: str) -> str:
        """The model name a collection's points carry (the name itself is made safe)."""
        points, _ = self.client.scroll(name, limit=1, with_payload=["model"])
        if points and points[0].payload and points[0].payload.get("model"):
            return str(points[0].payload["model"])
        return fallback

    def close(self) -> None:
        self.client.close()
