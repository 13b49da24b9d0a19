# python docs/results/facts-layer-probe-val.py val   (2-core CPU, ~25 min; writes /tmp/probe/layers-val.json, copied here)
"""Probe: which layer's frozen hidden states keep an invented name? Training-free chunk-mean keys."""
import json, sys, torch
from msa_agent.bench.tasks import build
from msa_agent.model.loader import load_model
torch.set_grad_enabled(False)
lm = load_model(None)
tok, model = lm.tokenizer, lm.model
task = build("facts", "full"); st = task.stages[-1]
split = sys.argv[1] if len(sys.argv) > 1 else "val"
qs = [q for q in st.queries if q.split == split and q.hops == 1]
mems = st.memories; keys = [m.key for m in mems]
def states(texts):
    out = []
    for i in range(0, len(texts), 32):
        b = tok(texts[i:i+32], return_tensors="pt", padding=True)
        hs = model(**b, output_hidden_states=True).hidden_states  # L+1 x [B, T, H]
        for j in range(b["input_ids"].shape[0]):
            m = b["attention_mask"][j].bool()
            x = torch.stack([h[j][m] for h in hs])[:, 1:]  # [L+1, T_j-1, H]: the first token's massive activations left out
            out.append(torch.nn.functional.normalize(x, dim=-1))
    return out
tok.padding_side = "right"
if tok.pad_token is None: tok.pad_token = tok.eos_token
D = states([m.text for m in mems]); Q = states([q.text for q in qs])
nl = D[0].shape[0]
res = {}
for L in list(range(0, nl, 2)):
    K = torch.stack([d[L].mean(0) for d in D])  # [N, H]
    for centred in (False, True):
        mu = K.mean(0) if centred else 0
        Kn = torch.nn.functional.normalize(K - mu, dim=-1)
        r1 = r5 = 0
        for q, qq in zip(Q, qs):
            qt = torch.nn.functional.normalize(q[L] - mu, dim=-1)  # [T, H]
            s = qt @ Kn.T  # [T, N]
            score = s.topk(min(2, s.shape[0]), dim=0).values.mean(0)
            top = [keys[i] for i in score.topk(5).indices.tolist()]
            r1 += top[0] in qq.gold; r5 += any(g in top for g in qq.gold)
        res[f"L{L} {'centred' if centred else 'raw'}"] = (r1 / len(qs), r5 / len(qs))
        print(L, centred, r1 / len(qs), r5 / len(qs), flush=True)
json.dump(res, open(f"/tmp/probe/layers-{split}.json", "w"), indent=1)
