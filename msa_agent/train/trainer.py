"""Router training on a frozen backbone: InfoNCE (tau = 0.1) with in-batch and hard negatives.

Each step takes ``batch_size`` pairs. A query's candidates are every positive in the batch
(in-batch negatives), every pair's explicit negatives, and ``hard_negatives`` documents per
pair mined by the current router (the top-scored non-positives of the whole pool, refreshed
every ``mine_every`` steps). Candidates sharing the query's source group are masked out, so
a near-copy of the positive never counts as a negative. The score inside the loss is the
runtime's "heads" rule (``msa_agent.train.score``).
"""

from __future__ import annotations

import math
import random
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F

from msa_agent.train.cache import DOC, QUERY, HiddenCache, Packed
from msa_agent.train.live import LiveDocs, LiveQueries
from msa_agent.train.pairs import Pair
from msa_agent.train.score import (
    TrainableRouter,
    doc_keys,
    heads_scores,
    pad_rows,
    query_features,
    score_matrix,
)
from msa_agent.train.teacher import Teacher


@dataclass
class TrainConfig:
    """Hyper-parameters of one router training run."""

    steps: int = 600
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.0
    temperature: float = 0.1
    rank: int | None = 64
    hard_negatives: int = 2
    mine_top: int = 16
    mine_start: int = 100
    mine_every: int = 200
    seed: int = 0
    top_tokens: int = 2  # the routing rule trained for: MemoryConfig.route_top_tokens
    distill: float = 0.0  # weight of the teacher's soft target (needs Dataset.teacher)
    teacher_temperature: float = 0.05
    # parts of the router held fixed ("factors", "adapter", "doc_adapter"): e.g. continue a
    # shipped router and train only a new document adapter
    frozen: tuple[str, ...] = ()


@dataclass
class Dataset:
    """Pairs resolved to cached rows: query ``i`` has positive ``pos[i]`` among ``docs``."""

    queries: Packed
    docs: Packed
    pos: list[int]
    negs: list[list[int]]
    group: list[int]  # source group of each document
    mined: list[list[int]] = field(default_factory=list)
    teacher: Teacher | None = None  # a teacher's top-k documents per query (BM25, MiniLM)

    def __len__(self) -> int:
        return len(self.pos)

    def to(self, device: torch.device | str) -> Dataset:
        """The same pairs with the hidden states on ``device``."""
        return replace(self, queries=self.queries.to(device), docs=self.docs.to(device))


@dataclass
class TrainReport:
    """What a run did and cost."""

    config: dict
    pairs: int
    documents: int
    seconds: float
    peak_rss_mb: float
    losses: list[float]
    eval: list[dict] = field(default_factory=list)


def build_dataset(cache: HiddenCache, pairs: Sequence[Pair], extra_docs: Sequence[str] = (),
                  progress: Callable[[str, int, int], None] | None = None) -> Dataset:
    """Encode (once, through the cache) every query and document, and index the pairs."""
    doc_texts: dict[str, int] = {}
    groups: list[str] = []
    for p in pairs:
        for text in (p.positive, *p.negatives):
            if text not in doc_texts:
                doc_texts[text] = len(doc_texts)
                groups.append(p.source if text == p.positive else f"neg:{text}")
    for text in extra_docs:
        if text not in doc_texts:
            doc_texts[text] = len(doc_texts)
            groups.append(f"extra:{text}")
    docs = list(doc_texts)
    queries = [p.query for p in pairs]
    cache.ensure(queries, QUERY, _tagged(progress, "queries"))
    cache.ensure(docs, DOC, _tagged(progress, "documents"))
    group_ids: dict[str, int] = {}
    return Dataset(
        queries=cache.packed(queries, QUERY),
        docs=cache.packed(docs, DOC),
        pos=[doc_texts[p.positive] for p in pairs],
        negs=[[doc_texts[n] for n in p.negatives] for p in pairs],
        group=[group_ids.setdefault(g, len(group_ids)) for g in groups],
    )


def _tagged(progress: Callable[[str, int, int], None] | None, tag: str
            ) -> Callable[[int, int], None] | None:
    if progress is None:
        return None
    return lambda done, total: progress(tag, done, total)


def info_nce(scores: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
             temperature: float) -> torch.Tensor:
    """Mean InfoNCE over queries: ``scores`` ``[B, D]``, one positive column per row."""
    logits = (scores / temperature).masked_fill(~valid, float("-inf"))
    return F.cross_entropy(logits, target)


def batch_loss(tr: TrainableRouter, data: Dataset, rows: Sequence[int], temperature: float,
               hard: int, rng: random.Random, distill: float = 0.0,
               teacher_temperature: float = 0.05, live: LiveQueries | None = None,
               live_docs: LiveDocs | None = None) -> torch.Tensor:
    """InfoNCE of a batch of pairs against in-batch, explicit and mined negatives; with
    ``distill`` > 0, plus that weight times the KL divergence from the teacher's distribution
    over its top-k documents and the positive to the router's over the same documents.
    ``live``: the queries are encoded now through the router's adapter (not the cache);
    ``live_docs``: the candidate documents too, through the document adapter."""
    cand: dict[int, int] = {}
    for i in rows:
        cand.setdefault(data.pos[i], len(cand))
    for i in rows:
        mined = data.mined[i] if data.mined else []
        for d in [*data.negs[i], *rng.sample(mined, min(hard, len(mined)))]:
            cand.setdefault(d, len(cand))
    teach = distill > 0 and data.teacher is not None
    if teach:
        for i in rows:
            for d in data.teacher.idx[i].tolist():
                cand.setdefault(d, len(cand))
    docs = list(cand)
    pool = data.docs if live_docs is None else Packed.of(live_docs.states(docs))
    keys, gather = doc_keys(tr, pool, docs if live_docs is None else range(len(docs)))
    x, mask = pad_rows(data.queries, rows) if live is None else live.batch(rows)
    scores = heads_scores(query_features(tr, x), mask, keys, gather, tr.top_tokens)
    dev = scores.device
    doc_group = torch.tensor([data.group[d] for d in docs], device=dev)
    own_group = torch.tensor([data.group[data.pos[i]] for i in rows], device=dev)
    target = torch.tensor([cand[data.pos[i]] for i in rows], device=dev)
    valid = doc_group[None, :] != own_group[:, None]
    valid[torch.arange(len(rows), device=dev), target] = True
    loss = info_nce(scores, target, valid, temperature)
    if teach:
        loss = loss + distill * teacher_kl(scores / temperature, _teacher_logits(
            data, rows, cand, teacher_temperature).to(dev))
    return loss


def _teacher_logits(data: Dataset, rows: Sequence[int], cand: dict[int, int],
                    temperature: float) -> torch.Tensor:
    """``[B, C]`` teacher logits over the batch's candidates: -inf outside its support."""
    t = data.teacher
    assert t is not None
    at = torch.tensor(list(rows))
    cols = torch.tensor([cand[d] for d in t.idx[at].flatten().tolist()]).view(len(rows), -1)
    out = torch.full((len(rows), len(cand)), float("-inf"))
    out.scatter_(1, cols, t.score[at] / temperature)
    pos = torch.tensor([cand[data.pos[i]] for i in rows])
    out[torch.arange(len(rows)), pos] = t.pos_score[at] / temperature
    return out


def teacher_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean KL(teacher || student), both softmaxed over the teacher's support (its finite
    logits), so the router learns the teacher's ranking of those documents."""
    support = torch.isfinite(teacher_logits)
    log_s = F.log_softmax(student_logits.masked_fill(~support, float("-inf")), dim=1)
    log_t = F.log_softmax(teacher_logits, dim=1)
    kl = (log_t.exp() * (log_t - log_s)).masked_fill(~support, 0.0)
    return kl.sum(1).mean()


@torch.no_grad()
def mine_hard_negatives(tr: TrainableRouter, data: Dataset, top: int) -> list[list[int]]:
    """Per query, the ``top`` highest-scored pool documents outside its positive's group."""
    scores = score_matrix(tr, data.queries, range(len(data)), data.docs, range(len(data.docs)))
    group = torch.tensor(data.group, device=scores.device)
    own = group[torch.tensor(data.pos, device=scores.device)]
    scores = scores.masked_fill(group[None, :] == own[:, None], float("-inf"))
    k = min(top, max(1, scores.shape[1] - 1))
    best = scores.topk(k, dim=1)
    return [[d for d, s in zip(ds, ss) if s > float("-inf")]
            for ds, ss in zip(best.indices.tolist(), best.values.tolist())]


def _trainable(tr: TrainableRouter, frozen: Sequence[str]) -> list[torch.nn.Parameter]:
    """The parameters of ``tr`` outside the ``frozen`` parts (which stop taking gradients)."""
    parts = {name.split(".")[0] for name, _ in tr.named_parameters()}
    if unknown := set(frozen) - parts:
        raise ValueError(f"cannot freeze {sorted(unknown)}: this router has {sorted(parts)}")
    for name, p in tr.named_parameters():
        p.requires_grad_(name.split(".")[0] not in frozen)
    kept = [p for p in tr.parameters() if p.requires_grad]
    if not kept:
        raise ValueError("every part of the router is frozen: nothing to train")
    return kept


def train(data: Dataset, tr: TrainableRouter, cfg: TrainConfig,
          on_step: Callable[[int, float], None] | None = None,
          evaluate: Callable[[TrainableRouter], dict] | None = None,
          eval_every: int = 0, live: LiveQueries | None = None,
          live_docs: LiveDocs | None = None) -> TrainReport:
    """Fit ``tr`` on ``data`` with AdamW and a cosine schedule; returns losses and cost.
    A router with a query adapter needs ``live`` (its queries, encoded each step); with
    ``live_docs`` the documents are encoded each step too (hard negatives are still mined
    from the cached, unadapted document states)."""
    if (tr.adapter is None) != (live is None):
        raise ValueError("a router with a query adapter trains on live queries, and only it")
    if (tr.doc_adapter is None) != (live_docs is None):
        raise ValueError("a router with a document adapter trains on live documents, and "
                         "only it")
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    opt = torch.optim.AdamW(_trainable(tr, cfg.frozen), lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _warmup_cosine(cfg.steps))
    order: list[int] = []
    losses, evals = [], []
    start = time.perf_counter()
    for step in range(cfg.steps):
        if cfg.hard_negatives and step >= cfg.mine_start and (
                (step - cfg.mine_start) % cfg.mine_every == 0):
            data.mined = mine_hard_negatives(
                tr, data if live is None else replace(data, queries=live.packed()),
                cfg.mine_top)
        if len(order) < cfg.batch_size:
            order += rng.sample(range(len(data)), len(data))
        rows, order = order[: cfg.batch_size], order[cfg.batch_size :]
        loss = batch_loss(tr, data, rows, cfg.temperature, cfg.hard_negatives, rng,
                          cfg.distill, cfg.teacher_temperature, live, live_docs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step, losses[-1])
        if evaluate is not None and eval_every and (step + 1) % eval_every == 0:
            evals.append({"step": step + 1, **evaluate(tr)})
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return TrainReport(asdict(cfg), len(data), len(data.docs), time.perf_counter() - start,
                       rss, losses, evals)


def _warmup_cosine(steps: int, warmup: int = 20) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    return factor


@torch.no_grad()
def recall_at(tr: TrainableRouter, queries: Packed, docs: Packed, gold: Sequence[int],
              ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Recall@k of ``gold[i]`` for query ``i`` over all ``docs`` under the runtime rule."""
    scores = score_matrix(tr, queries, range(len(queries)), docs, range(len(docs)))
    top = scores.topk(max(ks), dim=1).indices
    hit = top == torch.tensor(list(gold), device=top.device)[:, None]
    return {f"r{k}": float(hit[:, :k].any(1).float().mean()) for k in ks}


@torch.no_grad()
def pair_loss(tr: TrainableRouter, data: Dataset, temperature: float = 0.1,
              batch_size: int = 64) -> float:
    """Mean in-batch InfoNCE over ``data`` in fixed consecutive batches (for held-out pairs)."""
    rng = random.Random(0)
    saved, data.mined = data.mined, []
    try:
        losses = [float(batch_loss(tr, data, range(s, min(s + batch_size, len(data))),
                                   temperature, 0, rng))
                  for s in range(0, len(data), batch_size)]
    finally:
        data.mined = saved
    return sum(losses) / len(losses)
