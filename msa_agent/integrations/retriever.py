"""``MsaRetriever``: LangChain retriever over a :class:`~msa_agent.memory.Memory`."""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import Field

from msa_agent.async_memory import AsyncMemory
from msa_agent.memory import Memory
from msa_agent.types import RecallHit


class MsaRetriever(BaseRetriever):
    """Recall memories for a query as LangChain ``Document`` objects, best first.

    Each document's metadata holds the memory's own metadata plus ``id``, ``score``,
    ``kind``, ``namespace``, ``created_at``, ``source_id`` and ``round`` (and ``explanation``
    with ``explain=True``). ``k``, ``where``, ``namespace`` and ``hops`` may also be passed
    to ``invoke``.

    >>> retriever = MsaRetriever(memory=mem, k=4)  # doctest: +SKIP
    >>> retriever.invoke("What is the cat called?")  # doctest: +SKIP
    """

    memory: Memory
    k: int = Field(4, ge=1, description="Number of documents to return.")
    where: dict[str, Any] | None = Field(None, description="Equality filters (see recall).")
    namespace: str | None = Field(None, description="Namespace (default: the memory's).")
    explain: bool = Field(False, description="Add per-layer routing scores to the metadata.")
    hops: int | Literal["auto"] = Field(1, description="Routing rounds (memory interleave).")

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        hits = self.memory.recall(query, **self._recall_args(kwargs))
        return [to_document(h) for h in hits]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        """As the sync path, through :class:`AsyncMemory` (the event loop is not blocked)."""
        hits = await AsyncMemory(self.memory).recall(query, **self._recall_args(kwargs))
        return [to_document(h) for h in hits]

    def _recall_args(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """``recall`` arguments: the call's ``k``/``where``/``namespace``/``hops`` over the
        retriever's own."""
        return {"k": kwargs.get("k", self.k), "where": kwargs.get("where", self.where),
                "namespace": kwargs.get("namespace", self.namespace),
                "explain": self.explain, "hops": kwargs.get("hops", self.hops)}


def to_document(hit: RecallHit) -> Document:
    """A recall hit as a ``Document`` (text as page content, ids and score in metadata)."""
    meta = {**hit.metadata, "id": hit.id, "score": hit.score, "kind": hit.kind,
            "namespace": hit.namespace, "created_at": hit.created_at.isoformat(),
            "source_id": hit.source_id, "round": hit.round}
    if hit.explanation is not None:
        meta["explanation"] = hit.explanation.model_dump()
    return Document(page_content=hit.text, metadata=meta, id=hit.id)
