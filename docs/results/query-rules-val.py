"""Query-side routing rules against the runtime's, from a space's stored keys (val split).

    python query-rules-val.py TASK SPACE OUT.json

TASK: a suite task (facts, wiki, ...), full size; SPACE: a space holding its memories (the
suite's, or ``python -m msa_agent.bench.chunk_size --tasks facts --sizes P``'s). Per val
question, one routing-query forward (``Recall.query``, the shipped router and its query
adapter); then per rule, MSA routing alone within the question's namespace:
- top2-chunk: the runtime's rule (a chunk scores the mean of its 2 best query tokens; a
  memory its best chunk); it reproduces ``recall(routing="msa")``;
- colbert-mean: ColBERT's late interaction (each query token's best chunk of the memory,
  averaged over the query's tokens), and the same without the first (prefix) token;
- colbert-topM: the mean of the M best query tokens' best chunks;
- pooled: one query, the mean of the tokens' folded queries; a memory its best chunk.
A diagnostic only: none of the other rules is in the runtime.
"""
import json
import sys

import torch

from msa_agent import Memory
from msa_agent.bench import metrics
from msa_agent.bench.tasks import build
from msa_agent.kernels.route_topk.naive import fold_layers_as_heads, reduce_tokens

task_name, path, out_path = sys.argv[1:4]
task = build(task_name, "full")
val = [q for q in task.stages[-1].queries if q.split == "val"]


def doc_max(x: torch.Tensor, chunk_doc: torch.Tensor, m: int) -> torch.Tensor:
    """``[N, ...]`` chunk rows -> ``[M, ...]`` each memory's max over its chunks."""
    out = torch.full((m, *x.shape[1:]), float("-inf"))
    idx = chunk_doc.reshape(-1, *[1] * (x.dim() - 1)).expand_as(x)
    return out.scatter_reduce(0, idx, x, "amax")


with Memory.open(path) as mem:
    eng = mem._engine
    idx = eng.index
    keys = idx.unit_rows().flatten(1)  # [N, L*H*D] unit keys
    cd, m, heads = idx.chunk_doc, len(idx.doc_ids), idx.keys.shape[2]
    inv = {v: k for k, v in idx._ns_code.items()}
    key_of = {i: mem.get(i, namespace=inv[int(idx.doc_ns[idx._pos[i]])]).metadata["key"]
              for i in idx.doc_ids}
    rules: dict[str, list[list[str]]] = {}
    for q in val:
        qf = fold_layers_as_heads(eng.query(q.text), heads)[:, 0, 0]  # [T, L*H*D]
        s = keys @ qf.T  # [N, T]
        per_tok = doc_max(s, cd, m)  # [M, T]
        pooled = qf.mean(0)
        pooled = pooled / pooled.norm() * qf.norm(dim=1).mean()  # a token query's scale
        cands = {"top2-chunk": doc_max(reduce_tokens(s, 2), cd, m),
                 "colbert-mean": per_tok.mean(1),
                 "colbert-mean-noprefix": per_tok[:, 1:].mean(1),
                 "colbert-top3": per_tok.topk(min(3, s.shape[1]), 1).values.mean(1),
                 "colbert-top5": per_tok.topk(min(5, s.shape[1]), 1).values.mean(1),
                 "pooled": doc_max(keys @ pooled, cd, m)}
        mask = idx.mask_for(q.namespace)
        for name, d in cands.items():
            top = torch.topk(d.masked_fill(~mask, float("-inf")), 10).indices.tolist()
            rules.setdefault(name, []).append(
                list(dict.fromkeys(key_of[idx.doc_ids[j]] for j in top)))
out = {}
for name, ranked in rules.items():
    rows = {r["kind"]: r for r in metrics.score(val, ranked)}
    r = rows.get("single-hop", rows["all"])
    out[name] = [round(r["r1"], 3), round(r["r5"], 3)]
    print(task_name, name, out[name], flush=True)
json.dump({"task": task_name, "space": path, "split": "val", "row": "single-hop or all",
           "r1_r5": out}, open(out_path, "w"), indent=1)
