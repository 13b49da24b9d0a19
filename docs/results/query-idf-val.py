"""Probe (val only): the routing rule with each query token's scores weighted by its IDF.

    python docs/results/query-idf-val.py TASK SPACE OUT.json   (2-core CPU, ~5 min a task)

SPACE: the val space of `python -m msa_agent.bench.tune --mode full` (stored keys as the
runtime holds them). Per val question one routing-query forward (Recall.query: the shipped
router, its query adapter, the bfloat16 copy); then a chunk scores the mean of its 2 best query
tokens' scores, each token's score times idf(token)^beta (token document frequencies over the
7,862 Wikipedia training articles, not a benchmark bank); a memory its best chunk. beta 0 is
the runtime's rule (it must reproduce recall(routing="msa")). MSA routing alone.
"""
import json, math, sys
from collections import Counter
import torch
from msa_agent import Memory
from msa_agent.bench import metrics
from msa_agent.bench.tasks import build
from msa_agent.bench.wiki import wiki_split
from msa_agent.kernels.route_topk.naive import fold_layers_as_heads, reduce_tokens
from msa_agent.model.text import query_ids
torch.set_grad_enabled(False)
task_name, path, out_path = sys.argv[1:4]
val = [q for q in build(task_name, "full").stages[-1].queries if q.split == "val" and q.hops == 1]


def doc_max(x, chunk_doc, m):
    out = torch.full((m,), float("-inf"))
    return out.scatter_reduce(0, chunk_doc, x, "amax")


with Memory.open(path) as mem:
    eng = mem._engine
    tok, idx = eng.tokenizer, eng.index
    train = wiki_split().train
    df = Counter()
    for art in train:
        df.update(set(tok(art.text, add_special_tokens=False)["input_ids"]))
    n = len(train)
    idf = lambda t: math.log((n + 1) / (df.get(t, 0) + 1)) + 1  # noqa: E731
    keys = idx.unit_rows().flatten(1)
    cd, m, heads = idx.chunk_doc, len(idx.doc_ids), idx.keys.shape[2]
    inv = {v: k for k, v in idx._ns_code.items()}
    key_of = {i: mem.get(i, namespace=inv[int(idx.doc_ns[idx._pos[i]])]).metadata["key"]
              for i in idx.doc_ids}
    betas = (0.0, 0.5, 1.0, 2.0)
    ranked = {b: [] for b in betas}
    for q in val:
        ids = query_ids(tok, q.text, eng.cfg.max_doc_tokens)
        qf = fold_layers_as_heads(eng.query(q.text), heads)[:, 0, 0]  # [T, L*H*D]
        s = keys @ qf.T  # [N, T]
        mask = idx.mask_for(q.namespace)
        w0 = torch.tensor([idf(t) for t in ids])
        for b in betas:
            d = doc_max(reduce_tokens(s * w0[None] ** b, eng.cfg.route_top_tokens), cd, m)
            top = torch.topk(d.masked_fill(~mask, float("-inf")), 10).indices.tolist()
            ranked[b].append(list(dict.fromkeys(key_of[idx.doc_ids[j]] for j in top)))
    out = {}
    for b in betas:
        rows = {r["kind"]: r for r in metrics.score(val, ranked[b])}
        r = rows.get("single-hop", rows["all"])
        out[f"beta={b}"] = [round(r["r1"], 3), round(r["r5"], 3)]
        print(task_name, b, out[f"beta={b}"], flush=True)
json.dump({"task": task_name, "split": "val", "r1_r5": out}, open(out_path, "w"), indent=1)
