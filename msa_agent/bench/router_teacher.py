"""Score the router corpus's training queries with a teacher (see :mod:`msa_agent.train.teacher`).

    python -m msa_agent.bench.router_teacher --kind bm25
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import typer

from msa_agent.bench.router_corpus import Corpus
from msa_agent.train.teacher import bm25_teacher, embed, top_k


def main(corpus: Path = Path("bench-out/train/corpus.json.gz"),
         out: Path = Path("bench-out/train/teacher.safetensors"), k: int = 16,
         kind: str = "bm25") -> None:
    """Score every training query of the corpus against its documents."""
    c = Corpus.load(corpus)
    start = time.perf_counter()
    if kind == "bm25":
        t = bm25_teacher(c.docs, c.queries, c.positives, k)
    elif kind == "minilm":
        t = top_k(embed(c.queries), embed(c.docs), c.positives, k)
    else:
        raise typer.BadParameter(f"kind must be bm25 or minilm, got {kind!r}")
    t.save(out)
    first = (t.idx[:, 0] == torch.tensor(c.positives)).float().mean()
    print(json.dumps({"queries": len(c.queries), "docs": len(c.docs), "k": k,
                      "teacher_r1_on_pairs": round(float(first), 3),
                      "seconds": round(time.perf_counter() - start, 1)}))


if __name__ == "__main__":
    typer.run(main)
