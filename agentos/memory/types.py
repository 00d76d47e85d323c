"""The vocabulary every vector store shares: records, hits, spaces, the store interface,
its errors and the checks each implementation applies.

A module of its own so that the implementations (``vectors.py``: SQLite, ``qdrant.py``:
Qdrant) and their users import it rather than each other. The invariants every
implementation keeps are stated in ``vectors.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from agentos.errors import AgentosError


class VectorStoreError(AgentosError):
    """The vector store cannot be opened, written or queried."""

    title = "vector store"


class VectorDimensionError(VectorStoreError):
    """A vector whose dimension does not match the vectors it would be compared with."""


@dataclass(frozen=True, slots=True)
class VectorRecord:
    """One embedded text, with where it came from; the unit a vector store keeps."""

    source: str
    """The table the record comes from: ``results``, ``llm_calls`` or ``sink_items``."""
    source_id: str
    """The row's id in that table, as text."""
    text: str
    """What was embedded."""
    vector: Sequence[float]
    run_id: str | None = None
    agent: str | None = None
    created_at: float | None = None
    """When the source row was written (unix seconds)."""


@dataclass(frozen=True, slots=True)
class VectorHit:
    """A stored record close to a query, with its cosine similarity ``score``."""

    source: str
    source_id: str
    text: str
    score: float
    run_id: str | None
    agent: str | None
    created_at: float | None


@dataclass(frozen=True, slots=True)
class VectorSpace:
    """The vectors of one model and one dimension; the only ones ever compared together."""

    model: str
    dim: int
    count: int = 0


class VectorStore(Protocol):
    """What the indexer and search need of a vector store.

    Methods block (SQLite reads, Qdrant requests); asyncio code calls them through
    ``asyncio.to_thread``. One store may be used from several threads, one call at a time.
    """

    @property
    def description(self) -> str:
        """A short line saying what this store is, for ``top`` and reports."""
        ...

    @property
    def key(self) -> str:
        """Which store this is, stable across processes (``sqlite``, or ``qdrant:`` with
        its server or folder and collection prefix). The indexer's marks name the store
        that holds each record's vector, so that a record is indexed again into a store
        that was switched to."""
        ...

    def add(self, model: str, records: Sequence[VectorRecord]) -> None:
        """Upsert ``records`` into the spaces of ``model`` (one per vector dimension)."""
        ...

    def query(
        self, model: str, vector: Sequence[float], *, limit: int, agent: str | None = None
    ) -> list[VectorHit]:
        """The ``limit`` records of ``model`` closest to ``vector`` (of ``agent`` only, if
        given), best first; raises VectorDimensionError on a dimension mismatch."""
        ...

    def spaces(self, model: str | None = None) -> list[VectorSpace]:
        """The stored spaces (of ``model``), with how many vectors each holds."""
        ...

    def close(self) -> None: ...


def check_dimension(model: str, dim: int, stored: Sequence[int]) -> None:
    """Refuse a query of dimension ``dim`` when ``model`` has vectors, none of that size."""
    if stored and dim not in stored:
        sizes = ", ".join(str(d) for d in sorted(stored))
        raise VectorDimensionError(
            f"the query vector has {dim} dimensions, but the stored vectors of model "
            f"'{model}' have {sizes}: vectors of different sizes cannot be compared. Query "
            f"with the embedding model that produced them, or re-embed with this one"
        )


def check_vector(vector: Sequence[float]) -> None:
    if not vector:
        raise VectorDimensionError("an empty vector cannot be stored or searched")
    if not all(math.isfinite(x) for x in vector):
        raise VectorStoreError("a vector with NaN or infinite values cannot be used")
