"""Probe (val only): the summary channel's template on the question side. Memories keep the
vectors their space stores (PromptEOL's template, ``text.summary_ids``); only the question
is read through another template.

    python docs/results/summary-query-template-val.py WORK OUT.json [TASK ...]

WORK: the bench's spaces (``python -m msa_agent.bench.summary_channel ... --layer -1 --work
WORK``). Each template reads every val question through the runtime's own recall path
(``channel_pools``, as the bench's ``pools``), with ``recall.summary_ids`` swapped for the
template's; each question's routing queries are computed once. Rows fuse the pools as the
bench does, MSA alone and hybrid, at the shipped z-score weight and twice it. The first
template is the runtime's: its rows reproduce the bench's committed val rows.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from unittest import mock

from msa_agent.bench import metrics
from msa_agent.bench.summary_channel import POOL, cached_space, ranking
from msa_agent.model.loader import load_model
from msa_agent.model.text import special_prefix
from msa_agent.runtime.engine import fusion_of
from msa_agent.runtime.fusion import without_word_rules
from msa_agent.runtime.results import Scope

TEMPLATES = {
    "runtime": ('This text : "', '" means in one word:"'),
    "question": ('This question : "', '" means in one word:"'),
    "step by step": ('After thinking step by step, this text : "', '" means in one word:"'),
    "answer": ('The answer to this question : "', '" is in one word:"'),
}
WEIGHTS = (0.09375, 0.1875)


def template_ids(prefix: str, suffix: str):  # noqa: ANN201
    def ids_of(tokenizer, ids: list[int]) -> list[int]:  # noqa: ANN001
        lead = special_prefix(tokenizer)
        body = ids[len(lead):] if ids[:len(lead)] == lead else ids
        pre = tokenizer(prefix, add_special_tokens=False)["input_ids"]
        post = tokenizer(suffix, add_special_tokens=False)["input_ids"]
        return [*lead, *pre, *body, *post]
    return ids_of


def main(work: Path, out: Path, tasks: list[str]) -> None:
    lm = load_model(None, dtype="float32")
    report: dict = {}
    for name in tasks:
        with cached_space(name, "val", -1, work, lm) as (mem, queries, _):
            eng = mem._engine
            qs = [eng.query(q.text) for q in queries]
            for tname, (prefix, suffix) in TEMPLATES.items():
                eng._question_summaries.clear()  # the vectors the queries' forwards kept
                with mock.patch("msa_agent.runtime.recall.summary_ids",
                                template_ids(prefix, suffix)):
                    pools = [{mode: eng.channel_pools([q.text], POOL, Scope(
                        namespace=q.namespace), set(), [v], mode)[0][0]
                        for mode in ("msa", "hybrid")} for q, v in zip(queries, qs)]
                for mode in ("msa", "hybrid"):
                    for w in WEIGHTS:
                        f = fusion_of(mem.config.model_copy(
                            update={"summary_weight": w, "summary_norm": "z"}))
                        f = without_word_rules(f) if mode == "msa" else f
                        ranks = [ranking(mem, q, p[mode], f) for q, p in zip(queries, pools)]
                        row = f"{tname} | {mode} z w={w}"
                        rows = metrics.score(queries, ranks)
                        report.setdefault(name, {})[row] = rows
                        line = "  ".join(f"{r['kind']} {r['r1']:.3f}/{r['r5']:.3f}"
                                         for r in rows)
                        print(f"{name:9s} {row:38s} {line}", flush=True)
            out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:] or ["wiki", "sessions", "facts"])
