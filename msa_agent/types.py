"""Pydantic result types returned by the public API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class MemoryRecord(BaseModel):
    """One stored memory (a document; long texts are split into several, linked by source_id)."""

    id: str
    namespace: str
    kind: str
    text: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    session_id: str | None = None
    user_id: str | None = None
    agent_id: str | None = None
    source_id: str | None = None
    part: int = 0
    created_at: datetime
    n_tokens: int
    n_chunks: int
    expires_at: datetime | None = Field(
        None, description="When recall stops returning it (compaction then removes it).")


class MemoryEvent(BaseModel):
    """One add, update or forget of a memory and its other parts (:meth:`Memory.history`).

    Text is never kept, only its sha256 and length, so the history of a forgotten memory
    holds none of its words; its metadata key names are blanked when it is forgotten.
    """

    id: str = Field(description="The memory's id (its first part's).")
    namespace: str
    event: str = Field(description='"add", "update" or "forget".')
    at: datetime
    text_sha256: str | None = Field(None, description="Of the whole text after the event.")
    text_chars: int | None = None
    parts: int
    old_text_sha256: str | None = Field(None, description="Before the event (update, forget).")
    old_text_chars: int | None = None
    metadata_keys: list[str] | None = Field(None, description="After the event.")
    changed: list[str] = Field(default_factory=list, description='What an update changed: '
                               '"text", "metadata", "kind", "session_id", ...')


class Explanation(BaseModel):
    """Why a memory was recalled: its routing score in each MSA layer and the chunk that matched."""

    layer_scores: dict[int, float]
    best_chunk: int
    best_chunk_text: str
    combine: str
    channels: dict[str, float] = Field(
        default_factory=dict,
        description="Hybrid recall: each channel's score and rank ('msa', 'msa_rank', "
        "'lexical', 'lexical_rank') and the memory's recency among the candidates (0-1).")


class RecallHit(BaseModel):
    """A recalled memory with its routing score (higher is more relevant)."""

    id: str
    text: str
    score: float
    kind: str
    namespace: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    source_id: str | None = None
    expires_at: datetime | None = None
    round: int = Field(1, description="Routing round that found it (1 = the question alone).")
    via: list[str] = Field(default_factory=list, description="Memories whose text led to it.")
    explanation: Explanation | None = None


class SpaceStats(BaseModel):
    """Counts and sizes of a memory space."""

    path: str
    model: str
    dtype: str = Field("float32", description="The backbone's compute dtype (the space's).")
    routing: str
    router_id: str | None
    memories: int
    namespaces: dict[str, int]
    tokens: int
    chunks: int
    bytes_on_disk: int
    host_cache: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="The tiers of memory K/V read for answers, per array pair: the host tier "
        "as 'pooled' and 'full', the GPU tier (CUDA) as 'pooled_gpu' and 'full_gpu': hits, "
        "misses, evictions (memories), hit_rate, bytes, memories, and prefetch_issued / "
        "prefetch_used / prefetch_wasted (MemoryConfig.prefetch); this process since open.")


class AnswerRound(BaseModel):
    """Memories read in one routing round of :meth:`Memory.answer`.

    With ``read="pooled"`` each MSA layer reads its own top-k (``per_layer``); in a
    generative round (MSA checkpoints) ``memories`` are those read by any layer, each scored
    by the share of MSA layers that read it.
    """

    round: int
    memories: list[RecallHit]
    per_layer: dict[int, list[str]] = Field(
        default_factory=dict, description="Pooled reading: memory ids each MSA layer read.")
    asked: list[int] = Field(
        default_factory=list, description="Generative interleave: handles the model asked for.")
    appended: list[str] = Field(
        default_factory=list, description="Memory ids whose text was appended after the round.")


class Answer(BaseModel):
    """A generated answer grounded in memory, with its evidence and costs."""

    text: str
    read: str = Field(description="How memories were read: 'pooled', 'full', 'text' or 'chunks'.")
    rounds: list[AnswerRound] = Field(default_factory=list)
    prompt_tokens: int
    memory_tokens: int = Field(description="Tokens (or pooled chunks) of memory attended to.")
    generated_tokens: int
    timings_ms: dict[str, float] = Field(default_factory=dict)
