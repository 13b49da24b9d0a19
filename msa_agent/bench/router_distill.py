"""Train router variants on the distillation corpus and choose one on validation splits.

    python -m msa_agent.bench.router_distill --corpus corpus.json.gz --teacher teacher.safetensors \
        --device cuda --out $OUT --variants '[{"name": "all", "distill": 1.0}]'

One backbone pass caches every training and evaluation text (:mod:`msa_agent.train.cache`);
each variant (a name, optional ``sources`` to keep, ``init: "shipped"``, ``train: false`` to
only evaluate, ``mlp: {"q": width, "k": width}`` for residual MLPs in front of the
projections (a deeper router), ``layer_weights: true`` for a learned weight per layer in
the rule, and :class:`TrainConfig` fields) trains on the frozen
backbone and is scored on the ``val`` split of every evaluation set with the runtime's rule
(``score_matrix``), the memories of one namespace at a time, through the benchmark suite's
own metrics. The variant
with the best mean of val R@1 and R@5 over the tasks is chosen; only it (and the shipped
router, for reference) is then scored on ``test``. Reports and router files go to ``--out``
after every variant, so a run cut short keeps what it finished.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from msa_agent.bench.metrics import score
from msa_agent.bench.router_corpus import Corpus, EvalSet
from msa_agent.bench.tasks.base import Query
from msa_agent.model.loader import load_model, model_fingerprint
from msa_agent.model.query_adapter import QueryAdapter
from msa_agent.model.router import Router
from msa_agent.model.shape import ModelShape, resolve_msa_layers
from msa_agent.model.text import query_ids, split_text
from msa_agent.train.cache import DOC, QUERY, HiddenCache, Packed
from msa_agent.train.export import save_router
from msa_agent.train.live import LiveDocs, LiveQueries
from msa_agent.train.score import TrainableRouter, score_matrix
from msa_agent.train.teacher import Teacher
from msa_agent.train.trainer import Dataset, TrainConfig, TrainReport, train

SHIPPED = Path(__file__).resolve().parents[1] / "routers" / "smollm2-135m-instruct.safetensors"
_NOT_CONFIG = {"name", "sources", "init", "train", "adapter", "doc_adapter", "mlp",
               "layer_weights"}


def corpus_dataset(cache: HiddenCache, c: Corpus, teacher: Teacher | None) -> Dataset:
    """Every corpus pair, resolved to cached rows (documents in corpus order)."""
    cache.ensure(c.queries, QUERY)
    cache.ensure(c.docs, DOC)
    ids: dict[str, int] = {}
    return Dataset(cache.packed(c.queries, QUERY), cache.packed(c.docs, DOC), list(c.positives),
                   [[] for _ in c.queries], [ids.setdefault(g, len(ids)) for g in c.groups],
                   teacher=teacher)


def subset(data: Dataset, rows: list[int]) -> Dataset:
    """The pairs ``rows`` of ``data`` (the document pool stays whole)."""
    q = data.queries
    kept = Packed.of([q.row(i) for i in rows])
    t = data.teacher
    sub_t = None if t is None else Teacher(t.idx[rows], t.score[rows], t.pos_score[rows])
    return Dataset(kept, data.docs, [data.pos[i] for i in rows], [data.negs[i] for i in rows],
                   data.group, teacher=sub_t)


def rankings(tr: TrainableRouter, e: EvalSet, q: Packed, d: Packed, split: str
             ) -> tuple[list[Query], list[list[str]]]:
    """``split``'s queries and their top-10 memory keys, each within its own namespace."""
    rows = [i for i, x in enumerate(e.queries) if x["split"] == split]
    queries = [Query(**{**e.queries[i], "gold": tuple(e.queries[i]["gold"])}) for i in rows]
    if not rows or not e.docs:
        return queries, []
    s = score_matrix(tr, q, rows, d, range(len(e.docs)))
    ns = {n: i for i, n in enumerate(sorted(set(e.namespaces)))}
    doc_ns = torch.tensor([ns[n] for n in e.namespaces], device=s.device)
    q_ns = torch.tensor([ns[x.namespace] for x in queries], device=s.device)
    s = s.masked_fill(doc_ns[None, :] != q_ns[:, None], float("-inf"))
    top = s.topk(min(10, s.shape[1]), dim=1)
    return queries, [[e.keys[j] for j, v in zip(ji, vi) if v > float("-inf")]
                     for ji, vi in zip(top.indices.tolist(), top.values.tolist())]


def evaluate(tr: TrainableRouter, e: EvalSet, q: Packed, d: Packed, split: str
             ) -> list[dict[str, Any]]:
    """The suite's recall rows (:func:`msa_agent.bench.metrics.score`) for ``split``."""
    queries, ranked = rankings(tr, e, q, d, split)
    return score(queries, ranked) if ranked else []


def selection_score(rows: dict[str, list[dict[str, Any]]]) -> float:
    """Mean over tasks of (R@1 + R@5) / 2 on the val split's "all" row."""
    vals = [(r["r1"] + r["r5"]) / 2 for task in rows.values() for r in task
            if r["split"] == "val" and r["kind"] == "all"]
    return sum(vals) / len(vals)


def run_variant(v: dict[str, Any], data: Dataset, c: Corpus, cache: HiddenCache,
                layers: list[int]) -> tuple[TrainableRouter, dict[str, Any]]:
    lm = cache.lm
    cfg = TrainConfig(**{k: x for k, x in v.items() if k not in _NOT_CONFIG})
    shape = ModelShape.of(lm.model)
    weighted = bool(v.get("layer_weights"))
    if v.get("init"):  # "shipped" or a router file
        path = SHIPPED if v["init"] == "shipped" else Path(v["init"])
        tr = TrainableRouter.from_router(Router.load(path), cfg.rank, cfg.top_tokens,
                                         v.get("mlp"), weighted)
    else:
        tr = TrainableRouter(shape, layers, cfg.rank, cfg.seed, cfg.top_tokens,
                             mlp=v.get("mlp"), layer_weights=weighted)
    # {"first": layer, "rank": r, "alpha": a}: LoRA on first..L_max-1, on the queries'
    # forward ("adapter") or the documents' (their routing keys, "doc_adapter")
    for name in ("adapter", "doc_adapter"):
        if a := v.get(name):
            setattr(tr, name, QueryAdapter.for_model(lm.model, range(a["first"], max(layers)),
                                                     a.get("rank", 8), a.get("alpha", 16.0)))
    tr = tr.to(lm.device)
    info: dict[str, Any] = {"variant": v}
    if v.get("train", True):
        keep = v.get("sources")
        rows = [i for i, s in enumerate(c.sources) if not keep or s in keep]
        use = data if not keep else subset(data, rows)
        live = None if tr.adapter is None else LiveQueries(
            cache.encoder, _query_ids(cache, [c.queries[i] for i in rows]), tr.adapter)
        docs = None if tr.doc_adapter is None else live_docs(cache, c.docs, tr.doc_adapter)
        rep = (_train_fixed_queries(use, tr, cfg, live, docs)
               if live is not None and "adapter" in cfg.frozen
               else train(use, tr, cfg, live=live, live_docs=docs))
        info.update(pairs=len(use), train_s=round(rep.seconds, 1),
                    final_loss=rep.losses[-1], peak_rss_mb=round(rep.peak_rss_mb))
    return tr, info


def _train_fixed_queries(data: Dataset, tr: TrainableRouter, cfg: TrainConfig,
                         live: LiveQueries, docs: LiveDocs | None) -> TrainReport:
    """Train with a frozen query adapter: its queries' states are the same every step, so
    they are encoded once (not forwarded per batch) and the adapter is set aside meanwhile."""
    adapter, tr.adapter = tr.adapter, None
    try:
        fixed = replace(cfg, frozen=tuple(f for f in cfg.frozen if f != "adapter"))
        return train(replace(data, queries=live.packed()), tr, fixed, live_docs=docs)
    finally:
        tr.adapter = adapter


def _query_ids(cache: HiddenCache, texts: list[str]) -> list[list[int]]:
    """Token ids of queries as ``recall`` (and the cache) tokenises them."""
    return [query_ids(cache.lm.tokenizer, t, cache.max_doc_tokens) for t in texts]


def live_docs(cache: HiddenCache, texts: list[str], adapter: QueryAdapter) -> LiveDocs:
    """``texts`` split into pieces as the cache splits documents, to encode through
    ``adapter``."""
    tok = cache.lm.tokenizer
    return LiveDocs(cache.encoder, [[p.ids for p in split_text(tok, t, cache.max_doc_tokens)]
                                    for t in texts], adapter)


def query_states(tr: TrainableRouter, cache: HiddenCache, e: EvalSet, cached: Packed
                 ) -> Packed:
    """``e``'s query states for ``tr``: the cache's, or encoded through its adapter."""
    if tr.adapter is None:
        return cached
    ids = _query_ids(cache, [x["text"] for x in e.queries])
    return LiveQueries(cache.encoder, ids, tr.adapter).packed()


def main(
    corpus: Path = Path("bench-out/train/corpus.json.gz"),
    teacher: Path | None = None,
    out: Path = Path("bench-out/train/distill"),
    cache_root: Path = Path("bench-out/train/cache"),
    device: str = "cpu",
    variants: str = '[{"name": "shipped", "init": "shipped", "train": false, "top_tokens": 2}]',
    batch_tokens: int = 8192,
    max_pairs: int = 0,
    budget_s: float = 0.0,
    chunk_size: int = 64,
) -> None:
    """Cache, train each variant, score val; score test for the chosen one and the shipped.
    With ``budget_s``, a variant that would end past it (judged by the last one's time) is
    skipped. ``chunk_size``: the routing keys' pooling P for training and scoring (the
    runtime's ``MemoryConfig.chunk_size``; 64 is the paper's)."""
    torch.manual_seed(0)
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    lm = load_model(device=device)
    layers = resolve_msa_layers(ModelShape.of(lm.model), None)
    c = Corpus.load(corpus)
    t = Teacher.load(teacher) if teacher else None
    if max_pairs:  # a smoke run: the first pairs, the documents they need, short memories
        c, t = _shrink(c, t, max_pairs)
    cache = HiddenCache(cache_root, lm, layers, chunk_size=chunk_size, batch_tokens=batch_tokens)
    data = corpus_dataset(cache, c, t).to(lm.device)
    evals = {}
    for e in c.evals:
        cache.ensure(e.docs, DOC)
        cache.ensure([x["text"] for x in e.queries], QUERY)
        evals[e.name] = (e, cache.packed([x["text"] for x in e.queries], QUERY).to(lm.device),
                         cache.packed(e.docs, DOC).to(lm.device))
    report: dict[str, Any] = {"device": str(lm.device), "chunk_size": chunk_size,
                              "cache_s": round(time.perf_counter() - start, 1),
                              "pairs": len(c.queries), "docs": len(c.docs),
                              "sources": c.counts(), "runs": []}
    routers: dict[str, TrainableRouter] = {}
    last = 0.0
    for v in json.loads(variants):
        now = time.perf_counter() - start
        if budget_s and now + 1.2 * last > budget_s:  # leave time to score the test split
            report.setdefault("skipped", []).append(v["name"])
            continue
        tr, info = run_variant(v, data, c, cache, layers)
        last = time.perf_counter() - start - now
        info["val"] = {n: _evaluate(tr, cache, evals[n], "val") for n in evals}
        info["selection"] = selection_score(info["val"])
        routers[v["name"]] = tr
        if v.get("train", True):
            path = out / f"router-{v['name']}.safetensors"
            save_router(tr, path, model_fingerprint(lm),
                        meta={"variant": v, "chunk_size": chunk_size})
            tr.to(lm.device)
        report["runs"].append(info)
        print(json.dumps({"name": v["name"], "selection": round(info["selection"], 4),
                          **{k: info.get(k) for k in ("train_s", "final_loss")}}), flush=True)
        (out / "distill.json").write_text(json.dumps(report, indent=1))
    best = max(report["runs"], key=lambda r: r["selection"])
    report["chosen"] = best["variant"]["name"]
    report["test"] = {name: {n: _evaluate(routers[name], cache, evals[n], "test")
                             for n in evals}
                      for name in {best["variant"]["name"], "shipped"} if name in routers}
    report["total_s"] = round(time.perf_counter() - start, 1)
    (out / "distill.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({"chosen": report["chosen"], "total_s": report["total_s"]}), flush=True)


def _evaluate(tr: TrainableRouter, cache: HiddenCache, ev: tuple[EvalSet, Packed, Packed],
              split: str) -> list[dict[str, Any]]:
    e, q, d = ev
    if tr.doc_adapter is not None:
        d = live_docs(cache, e.docs, tr.doc_adapter).packed().to(q.data.device)
    return evaluate(tr, e, query_states(tr, cache, e, q).to(q.data.device), d, split)


def _shrink(c: Corpus, t: Teacher | None, n: int) -> tuple[Corpus, Teacher | None]:
    keep = sorted({c.positives[i] for i in range(n)})
    new = {d: j for j, d in enumerate(keep)}
    evals = []
    for e in c.evals:
        short = [i for i, d in enumerate(e.docs) if len(d) < 1500][:20]
        keys = {e.keys[i] for i in short}
        evals.append(EvalSet(e.name, [e.keys[i] for i in short], [e.docs[i] for i in short],
                             [e.namespaces[i] for i in short],
                             [q for q in e.queries if set(q["gold"]) <= keys]))
    small = Corpus([c.docs[d] for d in keep], [c.groups[d] for d in keep], c.queries[:n],
                   [new[p] for p in c.positives[:n]], c.sources[:n], evals)
    if t is None:
        return small, None
    idx = torch.tensor([[new.get(d, new[c.positives[i]]) for d in t.idx[i].tolist()]
                        for i in range(n)])
    return small, Teacher(idx, t.score[:n], t.pos_score[:n])


if __name__ == "__main__":
    import typer

    typer.run(main)
