"""Probe (val only): routing keys pooled with IDF weights instead of the plain chunk mean.

    python docs/results/facts-idf-pool-val.py facts /tmp/tune/facts-full OUT.json

(SPACE: the val space `python -m msa_agent.bench.tune --mode full` builds; 2-core CPU, ~15 min.)

The shipped router's key projection is linear and bias-free, so a weighted chunk mean of the
tokens' keys is the projection of the weighted mean of their hidden states. Token IDF from the
Wikipedia summaries outside the wiki task's bank (router-training text, not a benchmark
bank). Alpha 0 = the stored keys' plain mean (a check: it must reproduce routing="msa").
"""
import json, math, sys
from collections import Counter
import torch
from msa_agent import Memory
from msa_agent.bench import metrics
from msa_agent.bench.tasks import build
from msa_agent.model.text import split_text
from msa_agent.runtime.routing import RoutingIndex
torch.set_grad_enabled(False)
task_name, path, out_path = sys.argv[1:4]
task = build(task_name, "full")
val = [q for q in task.stages[-1].queries if q.split == "val" and q.hops == 1]

def idf_table(tok):
    from msa_agent.bench.wiki import wiki_split
    train = wiki_split().train
    df, n = Counter(), 0
    for art in train:
        text = art.text
        df.update(set(tok(text, add_special_tokens=False)["input_ids"])); n += 1
    return {t: math.log((n + 1) / (c + 1)) + 1 for t, c in df.items()}, math.log(n + 1) + 1, n

with Memory.open(path) as mem:
    eng = mem._engine
    tok, enc, P = eng.tokenizer, eng.encoder, eng.cfg.chunk_size
    idf, idf_max, n_ref = idf_table(tok)
    print("reference articles", n_ref, flush=True)
    live = eng._space.find()
    docs, owners, keys_of = [], [], {}
    for m in live:
        pieces = split_text(tok, m.text, eng.cfg.max_doc_tokens)
        assert len(pieces) == 1, "one piece per memory in this probe"
        docs.append(pieces[0].ids); owners.append(m)
    hs = enc.hidden_states(docs, pooled=False)  # [T, L, hidden] each
    layers = enc.layers
    queries = {q.qid: eng.query(q.text) for q in val}
    out = {}
    for alpha in (0.0, 1.0, 2.0, 4.0):
        index = RoutingIndex("cpu", top_tokens=eng.cfg.route_top_tokens)
        route = []
        for d, h in zip(docs, hs):
            w = torch.tensor([idf.get(t, idf_max) ** alpha for t in d])
            n_c = -(-len(d) // P)
            rows = []
            for c in range(n_c):
                hc, wc = h[c * P:(c + 1) * P], w[c * P:(c + 1) * P]
                pooled = (hc * wc[:, None, None]).sum(0) / wc.sum()  # [L, hidden]
                rows.append(torch.stack([enc.router[i].k(pooled[j][None])[0]
                                         for j, i in enumerate(layers)]))
            route.append(torch.stack(rows))  # [C, L, H, D]
        index.add([m.id for m in owners], [m.namespace for m in owners], route)
        key = {m.id: m.metadata["key"] for m in owners}
        ranked = []
        for q in val:
            r = index.rank_many([queries[q.qid]], 10, index.mask_for(q.namespace),
                                eng.cfg.layer_combine)[0]
            ranked.append(list(dict.fromkeys(key[index.doc_ids[d]] for d in r.docs)))
        rows = {r["kind"]: r for r in metrics.score(val, ranked)}
        r = rows.get("single-hop", rows["all"])
        out[f"alpha={alpha}"] = [round(r["r1"], 3), round(r["r5"], 3)]
        print(task_name, alpha, out[f"alpha={alpha}"], flush=True)
    msa = []
    for q in val:
        hits = mem.recall(q.text, k=10, namespace=q.namespace, routing="msa")
        msa.append(list(dict.fromkeys(h.metadata["key"] for h in hits)))
    rows = {r["kind"]: r for r in metrics.score(val, msa)}
    r = rows.get("single-hop", rows["all"])
    out["recall(routing=msa)"] = [round(r["r1"], 3), round(r["r5"], 3)]
    print(task_name, "runtime", out["recall(routing=msa)"], flush=True)
json.dump({"task": task_name, "split": "val", "r1_r5": out}, open(out_path, "w"), indent=1)
