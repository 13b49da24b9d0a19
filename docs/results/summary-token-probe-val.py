# python docs/results/summary-token-probe-val.py TASK [val]   (2-core CPU; writes /tmp/probe/summary-TASK-val.json; kept as docs/results/summary-token-probe-TASK-val.json)
"""Probe, training-free: a summary token after each memory and each question, read where the
runtime reads (the attention inputs of the MSA layers, as the encoder taps them).

Each text is followed by a suffix whose last token must sum it up ("... means in one word:"
as PromptEOL asks); the suffix comes after the text only, so the text's own states (its
routing keys and K/V) are those of the text alone. Queries are read both from the backbone
and from the runtime's routing-query model (the bfloat16 copy with the query adapter merged).
Cosine of the unit states ranks the memories. Alongside: MSA alone through the runtime."""
import json, sys, tempfile, time, torch
from msa_agent import Memory
from msa_agent.bench.tasks import build

torch.set_grad_enabled(False)
task_name = sys.argv[1]
split = sys.argv[2] if len(sys.argv) > 2 else "val"
st = build(task_name, "full").stages[-1]
qs = [q for q in st.queries if q.split == split and getattr(q, "hops", 1) == 1]
mems = st.memories
keys = [m.key for m in mems]
mem = Memory.open(tempfile.mkdtemp() + "/s")
enc, tok = mem._engine.encoder, mem._engine.tokenizer
layers = enc.layers
import os
# name: (prefix, suffix) around the text
SUFFIXES = {"word": ("", '"\nThis text means in one word:"'),
            "quoted": ('This text : "', '" means in one word:"'),
            "above": ("", '\nThe text above means in one word:"')}
SUFFIXES = {k: SUFFIXES[k] for k in os.environ.get("VARIANTS", ",".join(SUFFIXES)).split(",")}
QMODELS = os.environ.get("QMODELS", "base,query-model").split(",")
MAXDOC = 1000


def states(texts, frame, model=None):  # [N, L, hidden] at the suffix's last token
    pre = tok(frame[0], add_special_tokens=False)["input_ids"] if frame[0] else []
    sfx = tok(frame[1], add_special_tokens=False)["input_ids"]
    ids = [pre + tok(t, add_special_tokens=False)["input_ids"][:MAXDOC] + sfx for t in texts]
    out = [None] * len(ids)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # little padding
    for s in range(0, len(ids), 16):
        rows = order[s:s + 16]
        taps = enc._forward([ids[i] for i in rows], ("hidden",), layers, model=model)
        for r, i in enumerate(rows):
            out[i] = torch.stack([taps["hidden"][L][r, len(ids[i]) - 1].float() for L in layers])
    return torch.stack(out)


def score(D, Q, j, centred):
    mu = D[:, j].mean(0) if centred else 0
    K = torch.nn.functional.normalize(D[:, j] - mu, dim=-1)
    S = torch.nn.functional.normalize(Q[:, j] - mu, dim=-1) @ K.T
    top = S.topk(5, dim=1).indices.tolist()
    r1 = sum(keys[t[0]] in q.gold for t, q in zip(top, qs)) / len(qs)
    r5 = sum(any(keys[i] in q.gold for i in t) for t, q in zip(top, qs)) / len(qs)
    return r1, r5


def routed(D, Q):
    """The shipped router's heads rule on the summary tokens alone: mean over (MSA layer,
    query head) of cos(router-q, router-k), GQA-grouped (one key and one query token each)."""
    from msa_agent.kernels.route_topk.naive import fold_layers_as_heads, unit
    rt = enc.router
    kk = unit(torch.stack([rt[L].k(D[:, j]) for j, L in enumerate(layers)], 1))  # [N, L, Hkv, Dh]
    qq = torch.stack([rt[L].q(Q[:, j]) for j, L in enumerate(layers)], 1)  # [M, L, Hq, Dh]
    qf = fold_layers_as_heads(qq, kk.shape[2])[:, 0, 0]  # [M, L*Hkv*Dh]
    S = qf @ kk.flatten(1).T
    top = S.topk(5, dim=1).indices.tolist()
    r1 = sum(keys[t[0]] in q.gold for t, q in zip(top, qs)) / len(qs)
    r5 = sum(any(keys[i] in q.gold for i in t) for t, q in zip(top, qs)) / len(qs)
    return r1, r5


res = {"task": task_name, "split": split, "memories": len(mems), "questions": len(qs),
       "layers": layers}
qmodel, _ = enc._query_model()
for name, sfx in SUFFIXES.items():
    t0 = time.time()
    D = states([m.text for m in mems], sfx)
    for qname, qm in [x for x in (("base", None), ("query-model", qmodel)) if x[0] in QMODELS]:
        Q = states([q.text for q in qs], sfx, qm)
        for j, L in enumerate(layers):
            for centred in (False, True):
                r = score(D, Q, j, centred)
                res[f"{name} q={qname} L{L} {'centred' if centred else 'raw'}"] = r
                print(name, qname, L, centred, r, flush=True)
        res[f"{name} q={qname} router heads rule"] = routed(D, Q)
        print(name, qname, "router", res[f"{name} q={qname} router heads rule"], flush=True)
    res[f"{name} seconds"] = time.time() - t0
    torch.save(D, f"/tmp/probe/summary-{task_name}-{split}-{name}.pt")
json.dump(res, open(f"/tmp/probe/summary-{task_name}-{split}.json", "w"), indent=1)
