"""Probe (val only): several routing keys per memory, its chunk means plus keys of its rarest
tokens, under the runtime's rule (a memory scores its best row).

    python docs/results/rare-token-keys-val.py TASK SPACE OUT.json

SPACE: a space of the task's val memories made with the shipped router (for facts:
``python -m msa_agent.bench.chunk_size --tasks facts --sizes 64`` leaves one in
bench-out/chunk-size/facts-full-p64). The shipped key projection is linear, so a token's key
is the projection of its own hidden state, and a chunk's stored key the projection of the
chunk mean (m = 0 reproduces ``recall(routing="msa")``: a check). Token IDF from the
Wikipedia training articles (router-training text, not a benchmark bank). Variants: the m
rarest tokens of the memory; the last token of each of its m rarest words (a causal LM's
state at a word's last piece has seen the whole word).
"""
import json
import math
import sys
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
    df, n = Counter(), 0
    for art in wiki_split().train:
        df.update(set(tok(art.text, add_special_tokens=False)["input_ids"]))
        n += 1
    return {t: math.log((n + 1) / (c + 1)) + 1 for t, c in df.items()}, math.log(n + 1) + 1


def rare_tokens(ids, idf, idf_max, m):
    """Positions of the m rarest distinct tokens (first occurrence)."""
    first = {}
    for p, t in enumerate(ids):
        first.setdefault(t, p)
    ranked = sorted(first.items(), key=lambda tp: (-idf.get(tp[0], idf_max), tp[1]))
    return [p for _, p in ranked[:m]]


def rare_word_ends(ids, pieces, idf, idf_max, m):
    """Positions of the last piece of the m rarest words (a word's rarity: its rarest piece)."""
    words, cur = [], []
    for p, piece in enumerate(pieces):
        if cur and (piece.startswith("Ġ") or not piece[:1].isalnum()):
            words.append(cur)
            cur = []
        cur.append(p)
    if cur:
        words.append(cur)
    scored = sorted(((max(idf.get(ids[p], idf_max) for p in w), w[-1]) for w in words),
                    key=lambda sw: (-sw[0], sw[1]))
    seen, out = set(), []
    for _, end in scored:
        if ids[end] not in seen:
            seen.add(ids[end])
            out.append(end)
        if len(out) == m:
            break
    return out


with Memory.open(path) as mem:
    eng = mem._engine
    tok, enc, P = eng.tokenizer, eng.encoder, eng.cfg.chunk_size
    idf, idf_max = idf_table(tok)
    live = eng._space.find()
    docs, owners = [], []
    for m in live:
        for piece in split_text(tok, m.text, eng.cfg.max_doc_tokens):
            docs.append(piece.ids)
            owners.append(m)
    hs = enc.hidden_states(docs, pooled=False)  # [T, L, hidden] each
    layers = enc.layers

    def keys(h):  # [n, L, hidden] -> [n, L, Hkv, D]
        return torch.stack([enc.router[i].k(h[:, j]) for j, i in enumerate(layers)], 1)

    tok_keys = [keys(h) for h in hs]
    chunk_keys = [torch.stack([k[c * P:(c + 1) * P].mean(0) for c in range(-(-len(d) // P))])
                  for d, k in zip(docs, tok_keys)]
    queries = {q.qid: eng.query(q.text) for q in val}
    key_of = {m.id: m.metadata["key"] for m in owners}
    out = {}
    variants = [("chunks only", None, 0)] + [(f"{kind} m={m}", kind, m)
                                            for kind in ("rare tokens", "rare word ends")
                                            for m in (1, 2, 4, 8)]
    for name, kind, m in variants:
        index = RoutingIndex("cpu", top_tokens=eng.cfg.route_top_tokens)
        rows_of: dict[str, list[torch.Tensor]] = {}
        for d, tk, ck, owner in zip(docs, tok_keys, chunk_keys, owners):
            extra = []
            if kind == "rare tokens":
                extra = rare_tokens(d, idf, idf_max, m)
            elif kind == "rare word ends":
                extra = rare_word_ends(d, tok.convert_ids_to_tokens(d), idf, idf_max, m)
            rows_of.setdefault(owner.id, []).append(torch.cat([ck, tk[extra]]) if extra else ck)
        ids = list(rows_of)
        ns = {m.id: m.namespace for m in owners}
        index.add(ids, [ns[i] for i in ids], [torch.cat(rows_of[i]) for i in ids])
        ranked = []
        for q in val:
            r = index.rank_many([queries[q.qid]], 10, index.mask_for(q.namespace),
                                eng.cfg.layer_combine)[0]
            ranked.append(list(dict.fromkeys(key_of[index.doc_ids[x]] for x in r.docs)))
        rows = {r["kind"]: r for r in metrics.score(val, ranked)}
        r = rows.get("single-hop", rows["all"])
        out[name] = [round(r["r1"], 3), round(r["r5"], 3), int(index.keys.shape[0])]
        print(task_name, name, out[name], flush=True)
    msa = []
    for q in val:
        hits = mem.recall(q.text, k=10, namespace=q.namespace, routing="msa")
        msa.append(list(dict.fromkeys(h.metadata["key"] for h in hits)))
    rows = {r["kind"]: r for r in metrics.score(val, msa)}
    r = rows.get("single-hop", rows["all"])
    out["recall(routing=msa)"] = [round(r["r1"], 3), round(r["r5"], 3)]
    print(task_name, "runtime", out["recall(routing=msa)"], flush=True)
json.dump({"task": task_name, "space": path, "split": "val",
           "r1_r5_rows": out}, open(out_path, "w"), indent=1)
