"""A trained projection of the summary vectors (issue 13), on one H200.

The summary channel reads each memory's and each question's state at the end of PromptEOL's
template (layer 29's attention input, ``Encoder.last_states``). Unchanged, its cosines rank
Wikipedia val at 0.555 / 0.835 alone. This trains a linear map on those frozen vectors from
the distillation corpus's pairs (``python -m msa_agent.bench.router_corpus``; never a
benchmark memory or question): InfoNCE, the batch's other positives and random corpus
documents as negatives. Variants: one map for both sides or one per side, full rank or a
low-rank update of the identity, every pair or the Wikipedia pairs only.

    python3 docs/results/summary-projection-h200.py CORPUS OUT_DIR

Writes ``OUT_DIR/summary-projection.pt`` (each variant's maps, float16) and
``OUT_DIR/summary-projection.json`` (summary-alone R@1 / R@5 of the eval sets' val
questions, first part of each memory; the runtime's fused val rows are measured on the CPU
from the stored vectors by ``summary-projection-val.py``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from msa_agent.bench.router_corpus import Corpus
from msa_agent.model.encoder import Encoder
from msa_agent.model.loader import load_model
from msa_agent.model.text import query_ids, summary_ids

LAYER, MAX_TOKENS, BATCH, NEGATIVES = 29, 512, 512, 4096  # MAX_TOKENS: max_doc_tokens
DEV = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: a smoke run only
LIMIT = int(os.environ.get("LIMIT", "0"))  # smoke runs: the first LIMIT docs and pairs
WIKI = ("wiki-description", "wiki-title", "wiki-entity", "wiki-ict")
VARIANTS = [  # name, per side, rank (0 = full), sources (None = all), steps, lr
    ("sym-full-all", False, 0, None, 3000, 1e-3),
    ("asym-full-all", True, 0, None, 3000, 1e-3),
    ("sym-r64-all", False, 64, None, 3000, 1e-3),
    ("asym-r64-all", True, 64, None, 3000, 1e-3),
    ("sym-full-wiki", False, 0, WIKI, 3000, 1e-3),
    ("asym-full-wiki", True, 0, WIKI, 3000, 1e-3),
    ("asym-full-all-long", True, 0, None, 8000, 5e-4),
]
SECOND = [  # the second call: symmetric low-rank maps, by rank and steps
    (f"sym-r{r}-all-{s}", False, r, None, s, 1e-3) for r in (16, 32, 64, 128) for s in (1000, 3000)
]
if os.environ.get("SET") == "second":
    VARIANTS = SECOND


class Side(torch.nn.Module):
    """``x -> unit(x + x U V)``: the identity plus a learned update (full rank: U = I)."""

    def __init__(self, hidden: int, rank: int) -> None:
        super().__init__()
        self.full = rank == 0
        r = hidden if self.full else rank
        self.u = torch.nn.Parameter(torch.zeros(hidden, r) if self.full
                                    else torch.randn(hidden, r) / hidden ** 0.5)
        self.v = None if self.full else torch.nn.Parameter(torch.zeros(r, hidden))

    def matrix(self) -> torch.Tensor:  # [hidden, hidden], x @ matrix
        eye = torch.eye(self.u.shape[0], device=self.u.device)
        return eye + (self.u if self.full else self.u @ self.v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x @ self.matrix(), dim=-1)


def vectors(enc: Encoder, tok, texts: list[str]) -> torch.Tensor:  # noqa: ANN001
    ids = [summary_ids(tok, query_ids(tok, t, MAX_TOKENS)) for t in texts]
    return enc.last_states(ids, LAYER).to(DEV)


def train(q: torch.Tensor, d: torch.Tensor, pos: torch.Tensor, per_side: bool, rank: int,
          steps: int, lr: float) -> tuple[Side, Side]:
    hidden = q.shape[1]
    steps = int(os.environ.get("STEPS", steps))  # smoke runs: a few
    qs = Side(hidden, rank).to(DEV)
    ds = Side(hidden, rank).to(DEV) if per_side else qs
    params = list({id(p): p for p in [*qs.parameters(), *ds.parameters()]}.values())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    scale = torch.nn.Parameter(torch.tensor(20.0, device=DEV))
    opt.add_param_group({"params": [scale], "lr": lr * 10, "weight_decay": 0.0})
    g = torch.Generator(device="cpu").manual_seed(0)
    for _ in range(steps):
        b = torch.randint(len(pos), (BATCH,), generator=g).to(DEV)
        neg = torch.randint(len(d), (NEGATIVES,), generator=g).to(DEV)
        cand = torch.cat([pos[b], neg])  # [B + N] document indices
        logits = scale * qs(q[b]) @ ds(d[cand]).T  # [B, B + N]
        same = cand[None] == pos[b][:, None]  # another copy of the positive: not a negative
        target = torch.arange(len(b), device=DEV)
        same[target, target] = False
        loss = F.cross_entropy(logits.masked_fill(same, float("-inf")), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return qs, ds


@torch.no_grad()
def recall_at(qv: torch.Tensor, dv: torch.Tensor, ev, queries: list[dict]) -> tuple[float, float]:  # noqa: ANN001
    ns = ev.namespaces
    s = qv @ dv.T
    for r, qd in enumerate(queries):
        s[r, torch.tensor([n != qd["namespace"] for n in ns], device=s.device)] = -1e9
    top = s.topk(5, dim=1).indices.tolist()
    gold = [set(qd["gold"]) for qd in queries]
    r1 = sum(ev.keys[t[0]] in g for t, g in zip(top, gold)) / len(queries)
    r5 = sum(any(ev.keys[i] in g for i in t) for t, g in zip(top, gold)) / len(queries)
    return round(r1, 4), round(r5, 4)


def main(corpus_path: str, out: str) -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    t0 = time.time()
    lm = load_model(None, dtype="float32", device=DEV)
    enc = Encoder(lm, list(range(15, 30)), batch_tokens=65536)
    tok = lm.tokenizer
    c = Corpus.load(corpus_path)
    if LIMIT:
        c.queries, c.positives, c.sources = [
            [x for x, p in zip(v, c.positives) if p < LIMIT]
            for v in (c.queries, c.positives, c.sources)]
        c.docs = c.docs[:LIMIT]
        for ev in c.evals:
            ev.docs, ev.keys, ev.namespaces = (x[:LIMIT] for x in (ev.docs, ev.keys,
                                                                   ev.namespaces))
    d, q = vectors(enc, tok, c.docs), vectors(enc, tok, c.queries)
    evals = {}
    for ev in c.evals:
        qd = [x for x in ev.queries if x["split"] == "val" and x.get("hops", 1) == 1
              and any(g in ev.keys for g in x["gold"])]
        evals[ev.name] = (ev, qd, vectors(enc, tok, ev.docs),
                          vectors(enc, tok, [x["text"] for x in qd]))
    report = {"vectors_s": round(time.time() - t0, 1), "docs": len(c.docs),
              "pairs": len(c.queries), "rows": {}}
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}), flush=True)
    ident = {n: recall_at(qv, dv, ev, qd) for n, (ev, qd, dv, qv) in evals.items()}
    report["rows"]["identity"] = {"val": ident}
    print("identity", ident, flush=True)
    maps = {}
    pos_all = torch.tensor(c.positives, device=DEV)
    for name, per_side, rank, sources, steps, lr in VARIANTS:
        t1 = time.time()
        keep = torch.tensor([sources is None or s in sources for s in c.sources], device=DEV)
        qs, ds = train(q[keep], d, pos_all[keep], per_side, rank, steps, lr)
        with torch.no_grad():
            val = {n: recall_at(qs(qv), ds(dv), ev, qd) for n, (ev, qd, dv, qv) in evals.items()}
            maps[name] = {"query": qs.matrix().half().cpu(), "doc": ds.matrix().half().cpu()}
        report["rows"][name] = {"val": val, "train_s": round(time.time() - t1, 1),
                                "pairs": int(keep.sum()), "steps": steps, "lr": lr,
                                "rank": rank, "per_side": per_side}
        print(name, val, report["rows"][name]["train_s"], flush=True)
        Path(out).mkdir(parents=True, exist_ok=True)  # after each variant: a late crash keeps
        torch.save(maps, Path(out) / "summary-projection.pt")  # the earlier ones
        report["peak_gib"] = (round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
                              if DEV == "cuda" else None)
        (Path(out) / "summary-projection.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
