"""Validation only: MSA routing alone with per-layer weightings of the rule (layers as heads).

Caches, per val query, per-layer per-token chunk scores s[l, n, t] (folded, unit keys), then
scores weightings w_l: token score = sum_l w_l s_l / sum w, reduce_tokens(top 2), max over chunks.
"""
import json, sys
from pathlib import Path
import torch
from msa_agent import Memory
from msa_agent.bench import metrics
from msa_agent.bench.systems import dedupe
from msa_agent.bench.tasks import build
from msa_agent.kernels.route_topk.naive import fold_queries, reduce_tokens
from msa_agent.model.loader import load_model

torch.set_num_threads(1)
lm = load_model(None)
name = sys.argv[1]
task = build(name, "full")
val = [q for q in task.stages[-1].queries if q.split == "val"]
path = Path(f"/tmp/tune/{name}-full")
cache = Path(f"/tmp/h12/layers-{name}.pt")
with Memory.open(path, lm, route_top_tokens=2) as mem:
    e = mem._engine
    idx = e.index
    ids = idx.doc_ids
    keymap = {m.id: m.metadata["key"] for m in e._space.get_many(ids)}
    per_q = []
    for q in val:
        qv = e.query(q.text)  # [T, L, Hq, D]
        mask = idx.mask_for(q.namespace)
        chunk_ok = mask[idx.chunk_doc]
        kh = idx.keys[chunk_ok]  # [N, L, H, D]
        qf = fold_queries(qv, kh.shape[2])  # [T, L, H, D]
        s = torch.einsum("nlhd,tlhd->lnt", kh, qf)  # [L, N, T]
        per_q.append((s.half(), idx.chunk_doc[chunk_ok]))
    L = per_q[0][0].shape[0]

    def rank(w):
        out = []
        for s, owner in per_q:
            tok = torch.einsum("l,lnt->nt", w, s.float()) / w.sum()
            ch = reduce_tokens(tok, 2)
            doc = torch.full((len(ids),), float("-inf")).scatter_reduce(0, owner, ch, "amax")
            top = torch.topk(doc, 40).indices.tolist()
            out.append(dedupe([keymap[ids[d]] for d in top], 5))
        return out

    rows = {}
    variants = {"all (default)": torch.ones(L)}
    for a in range(0, L, 3):
        variants[f"layers {a}..{L-1}"] = torch.tensor([0.0] * a + [1.0] * (L - a))
    for b in range(3, L, 3):
        variants[f"layers 0..{b-1}"] = torch.tensor([1.0] * b + [0.0] * (L - b))
    for l in range(L):
        w = torch.zeros(L); w[l] = 1
        variants[f"layer {l} only"] = w
    variants["linear ramp up"] = torch.linspace(0.25, 1.75, L)
    variants["linear ramp down"] = torch.linspace(1.75, 0.25, L)
    for v, w in variants.items():
        r = metrics.score(val, rank(w))
        a = next(x for x in r if x["kind"] == "all")
        rows[v] = r
        print(f"{name:12s} {v:20s} R@1 {a['r1']:.3f} R@5 {a['r5']:.3f} n={a['n']}", flush=True)
Path(f"/tmp/h12/layers-{name}.json").write_text(json.dumps(rows, indent=1))
