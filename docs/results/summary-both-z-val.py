"""Exploratory, not kept (val only): routing="msa" with the MSA channel z-scored too, beside
the summary channel's z-scores, over the summary bench's cached val pools.

    python docs/results/summary-both-z-val.py OUT.json facts sessions wiki

Needs the spaces of ``python -m msa_agent.bench.summary_channel ... --split val --layer -1
--work /tmp/sum``. Rows: "task w=W" (the summary channel's weight; MSA's is 1) -> the bench's
score rows per kind."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from msa_agent.bench import metrics
from msa_agent.bench.summary_channel import cached_space, ranking
from msa_agent.model.loader import load_model
from msa_agent.runtime.engine import fusion_of
from msa_agent.runtime.fusion import MSA, SUMMARY, without_word_rules


def main(out_file: Path, tasks: list[str]) -> None:
    lm = load_model(None, dtype="float32")
    out: dict = {}
    for name in tasks:
        with cached_space(name, "val", -1, Path("/tmp/sum"), lm) as (mem, qs, pools):
            base = without_word_rules(fusion_of(mem.config))
            for w in (0.25, 0.5, 0.75, 1.0, 1.5, 2.0):
                f = replace(base, norms=((SUMMARY, "z"), (MSA, "z")),
                            weights=((MSA, 1.0), (SUMMARY, w)))
                rows = metrics.score(qs, [ranking(mem, q, p["msa"], f)
                                          for q, p in zip(qs, pools)])
                out[f"{name} w={w}"] = rows
                print(name, w, " ".join(f"{r['kind']} {r['r1']:.3f}/{r['r5']:.3f}"
                                        for r in rows), flush=True)
    out_file.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
