"""Probe (val only, not the runtime): one summary vector per 64-token chunk instead of one
per memory, for the sessions task, where one vector per session fails (docs/routing.md).

    python docs/results/summary-chunks-probe-val.py SPACE OUT.json [TASK]

SPACE: the bench's summary space of TASK's val split (``python -m
msa_agent.bench.summary_channel ... --work DIR`` makes ``DIR/TASK-full-val-summary-1`` and
its cached pools). Each memory's text is cut into the routing chunks (64 tokens); each chunk
is read alone inside the summary template (``text.summary_ids``) through the runtime's
``Encoder.last_states`` at the space's summary layer. A memory's chunk score is the best
cosine of its chunks with the question's summary vector (the runtime's ``summary_vectors``);
its memory score, the cosine with the vector the space stores for it.

Rows: the summary channel alone, within the question's namespace (per memory, per chunk,
and the better of the two); then the cached pools fused as the bench fuses them (the
runtime's ``_fused`` and ``fusion_of``): "memory" rows fuse them as they are (the bench's
rows), "chunks" rows with the summary channel's scores replaced by the chunk scores;
``msa`` and ``hybrid`` at a few weights and norms.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from msa_agent import Memory
from msa_agent.bench import metrics
from msa_agent.bench.summary_channel import POOL, K, cached_pools, ranking
from msa_agent.bench.tasks import build
from msa_agent.model.loader import load_model
from msa_agent.model.text import summary_ids
from msa_agent.runtime.engine import fusion_of
from msa_agent.runtime.fusion import SUMMARY, without_word_rules

CHUNK = 64
ROWS = [(mode, norm, w) for mode in ("msa", "hybrid")
        for norm, ws in (("max", (2.0, 4.0, 8.0)), ("z", (0.0625, 0.125, 0.25)))
        for w in ws]


def chunk_vectors(eng, texts: list[str]) -> list[torch.Tensor]:  # noqa: ANN001
    """Each text's chunks' summary vectors ``[n_chunks, hidden]``."""
    tok = eng.tokenizer
    pieces, owner = [], []
    for i, t in enumerate(texts):
        body = tok(t, add_special_tokens=False)["input_ids"]
        for s in range(0, len(body), CHUNK):
            pieces.append(summary_ids(tok, body[s:s + CHUNK]))
            owner.append(i)
    flat = eng.encoder.last_states(pieces, eng.summary_layer)
    return [flat[[j for j, o in enumerate(owner) if o == i]] for i in range(len(texts))]


def stored_vectors(eng, items: list) -> torch.Tensor:  # noqa: ANN001
    """The space's own summary vector of each item ``[len(items), hidden]`` (one part each)."""
    ids = eng.index.doc_ids
    key_of = {m.id: m.metadata["key"] for m in eng._space.get_many(list(ids))}
    row = {key_of[i]: r for r, i in enumerate(ids)}
    return eng.index._summary.view()[[row[m.key] for m in items]].cpu()


def main(space: Path, out: Path, task_name: str) -> None:
    lm = load_model(None, dtype="float32")
    stage = build(task_name, "full").stages[-1]
    queries = [q for q in stage.queries if q.split == "val"]
    spaces = {q.namespace for q in queries}
    items = [m for m in stage.memories if m.namespace in spaces]
    report: dict = {"task": task_name, "memories": len(items), "questions": len(queries),
                    "chunk_tokens": CHUNK, "alone": {}, "fused": {}}
    with Memory.open(space, lm, summary_weight=1.0) as mem:
        eng = mem._engine
        chunks = chunk_vectors(eng, [m.text for m in items])
        whole = stored_vectors(eng, items)
        qv = eng.summary_vectors([q.text for q in queries])
        report["chunks"] = sum(len(c) for c in chunks)
        score = {}  # per query: key -> (whole cosine, best chunk cosine)
        for q, v in zip(queries, qv):
            score[q.qid] = {m.key: (float(whole[i] @ v), float((chunks[i] @ v).max()))
                            for i, m in enumerate(items) if m.namespace == q.namespace}
        for name, pick in (("memory", lambda w, c: w), ("chunks", lambda w, c: c),
                           ("best of both", max)):
            ranks = [sorted(score[q.qid], key=lambda k: -pick(*score[q.qid][k]))[:K]
                     for q in queries]
            report["alone"][name] = metrics.score(queries, ranks)
            print(task_name, "alone", name, _line(report["alone"][name]), flush=True)
        pools = cached_pools(mem, queries, space / "pools-val.json")
        ids = list({i for p in pools for r in p.values() for c in r.values() for i, _ in c})
        key_of = {m.id: m.metadata["key"] for m in eng._space.get_many(ids)}
        for mode, norm, w in ROWS:
            cfg = mem.config.model_copy(update={"summary_weight": w, "summary_norm": norm})
            f = fusion_of(cfg)
            f = without_word_rules(f) if mode == "msa" else f
            for name in ("memory", "chunks"):  # memory: the cached pools as they are
                ranks = []
                for q, p in zip(queries, pools):
                    channels = dict(p[mode])
                    if name == "chunks":
                        channels[SUMMARY] = sorted(
                            ((i, score[q.qid][key_of[i]][1]) for i, _ in channels[SUMMARY]),
                            key=lambda x: -x[1])
                    ranks.append(ranking(mem, q, channels, f))
                row = f"{mode} {norm} w={w} {name}"
                report["fused"][row] = metrics.score(queries, ranks)
                print(task_name, row, _line(report["fused"][row]), flush=True)
    assert POOL == mem.config.fusion_pool
    out.write_text(json.dumps(report, indent=1))


def _line(rows: list[dict]) -> str:
    return "  ".join(f"{r['kind']} {r['r1']:.3f}/{r['r5']:.3f}" for r in rows)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "sessions")
