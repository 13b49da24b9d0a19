"""Request bodies and the small response envelopes of the HTTP API.

Responses that carry memories reuse the library's own types (``msa_agent.types``), so the
OpenAPI schema and the Python API describe one thing. Fields here only shape JSON; every value
is validated again by :class:`~msa_agent.memory.Memory`, whose errors the server returns.
``extra="forbid"``: a misspelt field is refused, not silently ignored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from msa_agent.types import RecallHit

Hops = int | Literal["auto"]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RememberItem(Body):
    """One memory to store: :meth:`Memory.remember`'s arguments."""

    text: str
    kind: str | None = None
    metadata: dict[str, Any] | None = None
    session_id: str | None = None
    user_id: str | None = None
    agent_id: str | None = None
    namespace: str | None = None
    at: datetime | None = Field(None, description="When it happened (default now; naive = UTC).")
    key: str | None = Field(None, description="Upsert key, unique in its namespace.")
    expires_at: datetime | None = Field(
        None, description="When recall stops returning it (naive = UTC); not with ttl.")
    ttl: float | None = Field(None, description="Seconds from now until it expires.")


class RememberRequest(RememberItem):
    dedupe: bool = False


class RememberBatch(Body):
    """Many memories in one encoder pass and one atomic write; ``namespace`` is the default
    of items that name none."""

    items: list[RememberItem | str]
    namespace: str | None = None
    dedupe: bool = False


class RecallRequest(Body):
    """:meth:`Memory.recall`'s arguments."""

    query: str
    k: int | None = None
    namespace: str | None = None
    where: dict[str, Any] | None = None
    explain: bool = False
    hops: Hops = 1
    routing: Literal["hybrid", "msa", "lexical"] | None = None
    since: datetime | None = None
    until: datetime | None = None
    offset: int = 0
    min_score: float | None = None
    group: bool | None = None


class AnswerRequest(Body):
    """:meth:`Memory.answer`'s arguments; ``stream=true`` answers with server-sent events."""

    question: str
    k: int | None = None
    namespace: str | None = None
    where: dict[str, Any] | None = None
    hops: Hops = 1
    read: Literal["auto", "text", "chunks", "full", "kv_chunks", "pooled"] = "auto"
    max_new_tokens: int = 64
    routing: Literal["hybrid", "msa", "lexical"] | None = None
    stream: bool = False


class UpdateRequest(Body):
    text: str | None = None
    metadata: dict[str, Any] | None = Field(None, description="Merged into the stored metadata.")
    namespace: str | None = None


class ForgetRequest(Body):
    """Every match of ``where`` (non-empty), or every memory of the namespace (``all``)."""

    where: dict[str, Any] | None = None
    namespace: str | None = None
    all: bool = False


class ExportRequest(Body):
    """A bundle written at ``path`` on the server's machine (admin keys only)."""

    path: str
    namespaces: list[str] | None = None
    all_namespaces: bool = False


class ImportRequest(Body):
    path: str
    namespace: str | None = None
    keep_namespaces: bool = False


class IdResponse(BaseModel):
    id: str


class IdsResponse(BaseModel):
    ids: list[str]


class DeletedResponse(BaseModel):
    deleted: int


class RecallResponse(BaseModel):
    hits: list[RecallHit]


class Health(BaseModel):
    status: str = "ok"
    model: str
    memories: int | None = Field(None, description="Memories the caller's key may see "
                                                    "(none without a key).")


class ErrorBody(BaseModel):
    """Every error: the library's exception name and its one-line message."""

    error: str
    detail: str | list[Any]
