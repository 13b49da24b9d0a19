"""Exploratory, not kept (val only): the summary channel's z-scores times ``n_chunks ** -a``,
a weight falling with a memory's length, over the summary bench's cached val pools.

    python docs/results/summary-length-weight-val.py OUT.json facts sessions wiki

Needs the spaces of ``python -m msa_agent.bench.summary_channel ... --split val --layer -1
--work /tmp/sum``. Rows: "task routing a=A w=W" -> the bench's score rows per kind."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

from msa_agent.bench import metrics
from msa_agent.bench.summary_channel import cached_space, ranking
from msa_agent.model.loader import load_model
from msa_agent.runtime import fusion as F
from msa_agent.runtime.engine import fusion_of
from msa_agent.runtime.fusion import SUMMARY, without_word_rules

F._NORMS["id"] = list  # the values below come z-scored and weighted already


def main(out_file: Path, tasks: list[str]) -> None:
    lm = load_model(None, dtype="float32")
    out: dict = {}
    for name in tasks:
        with cached_space(name, "val", -1, Path("/tmp/sum"), lm) as (mem, qs, pools):
            idx = mem._engine.index
            counts = torch.bincount(idx.chunk_doc.cpu(), minlength=len(idx.doc_ids)).tolist()
            n_chunks = dict(zip(idx.doc_ids, counts))
            for mode in ("msa", "hybrid"):
                base = fusion_of(mem.config)
                base = without_word_rules(base) if mode == "msa" else base
                for a in (0.0, 0.5, 1.0, 2.0):
                    for w in (0.0625, 0.09375, 0.125, 0.25, 0.5):
                        f = replace(base, norms=((SUMMARY, "id"),), weights=tuple(
                            (c, w if c == SUMMARY else v) for c, v in base.weights))
                        ranks = []
                        for q, p in zip(qs, pools):
                            ch = dict(p[mode])
                            z = F._zscore([s for _, s in ch[SUMMARY]])
                            ch[SUMMARY] = [(i, v * n_chunks[i] ** -a)
                                           for (i, _), v in zip(ch[SUMMARY], z)]
                            ranks.append(ranking(mem, q, ch, f))
                        rows = metrics.score(qs, ranks)
                        out[f"{name} {mode} a={a} w={w}"] = rows
                        print(name, mode, a, w, " ".join(
                            f"{r['kind']} {r['r1']:.3f}/{r['r5']:.3f}" for r in rows), flush=True)
    out_file.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
