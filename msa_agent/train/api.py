"""High-level router training: pairs in, a router file out.

    from msa_agent.train import train_router, inverse_cloze, read_pairs_jsonl
    result = train_router(lm, pairs, out="router.safetensors")

The backbone stays frozen. Hidden states are cached on disk (``cache_dir``), so a second run
over the same texts (another seed, rank or step count) skips the forward passes.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from msa_agent.model.loader import LoadedModel, model_fingerprint
from msa_agent.model.loader import cache_dir as default_cache_dir
from msa_agent.model.router import Router
from msa_agent.model.shape import ModelShape, resolve_msa_layers
from msa_agent.train.cache import HiddenCache
from msa_agent.train.export import save_router
from msa_agent.train.pairs import Pair, dedupe, entity_pairs, inverse_cloze
from msa_agent.train.score import TrainableRouter
from msa_agent.train.trainer import (
    Dataset,
    TrainConfig,
    TrainReport,
    build_dataset,
    pair_loss,
    recall_at,
    train,
)

Progress = Callable[[str, int, int], None]


@dataclass
class TrainResult:
    """The trained router, where it was written, and what training cost."""

    router: TrainableRouter
    path: Path | None
    report: TrainReport
    cache_seconds: float
    cache_peak_rss_mb: float
    held_out: dict[str, float] = field(default_factory=dict)


def train_router(
    lm: LoadedModel,
    pairs: Sequence[Pair],
    *,
    out: str | Path | None = None,
    layers: list[int] | None = None,
    config: TrainConfig | None = None,
    held_out: Sequence[Pair] = (),
    extra_docs: Sequence[str] = (),
    cache_root: str | Path | None = None,
    chunk_size: int = 64,
    max_doc_tokens: int = 512,
    dtype: str = "float16",
    meta: dict[str, Any] | None = None,
    progress: Progress | None = None,
    init: Router | None = None,
    mlp: dict[str, int] | None = None,
    layer_weights: bool = False,
) -> TrainResult:
    """Train router projections for ``lm`` on ``pairs`` (frozen backbone) and save them.

    ``held_out`` pairs are scored before and after training (loss and recall@1/5 among their
    own positives) and never trained on. ``extra_docs`` join the pool of mined negatives.
    ``init`` continues training an existing router (e.g. the shipped one, to adapt it to a
    memory space) instead of starting from random weights; its layers are used. ``mlp``
    ({"q": width, "k": width}) puts a residual MLP in front of that side's projection (a
    deeper router, docs/routing.md; it starts as the identity where ``init`` has none).
    ``layer_weights``: learn a weight per layer in the rule's mean over layers (equal at
    first, or ``init``'s own), trained with the projections.
    """
    cfg = config or TrainConfig()
    shape = ModelShape.of(lm.model)
    layers = init.layer_ids if init is not None else resolve_msa_layers(shape, layers)
    cache = HiddenCache(Path(cache_root or default_cache_dir() / "router-cache"), lm, layers,
                        chunk_size=chunk_size, max_doc_tokens=max_doc_tokens)
    start = time.perf_counter()
    data = build_dataset(cache, dedupe(pairs), extra_docs, progress).to(lm.device)
    val = build_dataset(cache, dedupe(held_out), (), progress).to(lm.device) if held_out else None
    cache_s = time.perf_counter() - start
    cache_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if init is None:
        tr = TrainableRouter(shape, layers, cfg.rank, cfg.seed, cfg.top_tokens,
                             mlp=mlp, layer_weights=layer_weights).to(lm.device)
    else:
        tr = TrainableRouter.from_router(init.cpu(), cfg.rank, cfg.top_tokens,
                                         mlp, layer_weights).to(lm.device)
    before = evaluate_held_out(tr, val, cfg.temperature) if val else {}
    step_cb = (lambda s, _loss: progress("steps", s + 1, cfg.steps)) if progress else None
    report = train(data, tr, cfg, on_step=step_cb)
    after = evaluate_held_out(tr, val, cfg.temperature) if val else {}
    scores = {**{f"before_{k}": v for k, v in before.items()}, **after}
    path = None
    if out is not None:
        info = {"train": _summary(cfg, report), "held_out": scores, **(meta or {})}
        path = save_router(tr, out, model_fingerprint(lm), dtype=dtype, meta=info)
    return TrainResult(tr, path, report, cache_s, cache_rss, scores)


def evaluate_held_out(tr: TrainableRouter, val: Dataset, temperature: float) -> dict[str, float]:
    """Loss and recall@1/5 of held-out pairs among all their documents."""
    with torch.no_grad():
        return {"loss": pair_loss(tr, val, temperature),
                **recall_at(tr, val.queries, val.docs, val.pos)}


def memory_pairs(path: str | Path, *, per_passage: int = 1, seed: int = 0,
                 namespace: str | None = None, entities: int = 2) -> list[Pair]:
    """Self-supervised pairs from the texts stored in a memory space: inverse cloze, plus
    ``entities`` entity-keyed questions per memory (0 = none)."""
    from msa_agent.store import Space

    with Space.open(Path(path), read_only=True) as space:
        texts = [m.text for m in space.live_chunks() if namespace in (None, m.namespace)]
    pairs = inverse_cloze(texts, per_passage=per_passage, seed=seed)
    return pairs + (entity_pairs(texts, per_passage=entities, seed=seed) if entities else [])


def _summary(cfg: TrainConfig, report: TrainReport) -> dict[str, Any]:
    return {"config": cfg.__dict__, "pairs": report.pairs, "documents": report.documents,
            "seconds": round(report.seconds, 1), "final_loss": report.losses[-1]}
