"""Recipe of the first router shipped for the embedded SmolLM2-135M-Instruct (reproducible;
since 2026-11-29 the shipped file holds the distilled router of
:mod:`msa_agent.bench.router_distill`).

    cd /tmp && python -m msa_agent.train.recipe --device cuda --eval-bank --batch-tokens 32768 \
        --out /path/to/msa_agent/routers/smollm2-135m-instruct.safetensors

(the first shipped file was made this way on one H100: caching 49 s, training 142 s; ``--device
cpu`` gives the same recipe on a CPU, far slower; see docs/routing.md).

Data: only ``wiki_split().train`` (seed 0), which is disjoint from the benchmark's 2,000-article
bank and none of whose descriptions equals a benchmark question. Of it, articles whose
description is unique within ``train`` are kept (an ambiguous description has no single
positive). The first ``--n-val`` are held out for validation; the next ``--n-fit`` (default
all) give the training pairs:
- description -> article text (the article as ``remember`` stores it: 64-token chunk means);
- ``--ict N`` (default 1) inverse-cloze pairs per article (a sentence -> the rest of it).
The router (all MSA layers 15..29) trains on the frozen backbone with InfoNCE, tau = 0.1,
in-batch plus mined hard negatives (``TrainConfig``), seed 0.

``--variants`` takes a JSON list of ``TrainConfig`` overrides and trains each on the same
cached data (a sweep); ``--eval-bank`` also scores the benchmark's 200 questions over the
2,000-article bank from cached hidden states (the runtime's rule; for reporting only, never
for choosing: choose on the validation articles).
"""

from __future__ import annotations

import json
import resource
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
import typer

from msa_agent.model.loader import load_model, model_fingerprint
from msa_agent.model.shape import ModelShape, resolve_msa_layers
from msa_agent.train.cache import DOC, QUERY, HiddenCache, Packed
from msa_agent.train.data import Article, wiki_split
from msa_agent.train.export import save_router
from msa_agent.train.pairs import Pair, inverse_cloze
from msa_agent.train.score import TrainableRouter
from msa_agent.train.trainer import Dataset, TrainConfig, build_dataset, recall_at, train

SHIPPED_NAME = "smollm2-135m-instruct.safetensors"
# The shipped router's training config (chosen on the validation articles, see docs/routing.md).
# the shipped router was trained under the paper's rule (max over query tokens)
SHIPPED_CONFIG = {"rank": 64, "lr": 1e-3, "batch_size": 256, "hard_negatives": 4, "steps": 1500,
                  "top_tokens": 1}


def recipe_articles(n_val: int, n_fit: int | None) -> tuple[list[Article], list[Article]]:
    """(validation, fit) articles from ``wiki_split().train`` with unique descriptions."""
    train = wiki_split().train
    counts = Counter(a.description for a in train)
    usable = [a for a in train if counts[a.description] == 1]
    val = usable[:n_val]
    fit = usable[n_val:] if n_fit is None else usable[n_val : n_val + n_fit]
    return val, fit


def recipe_pairs(fit: list[Article], ict: int, seed: int = 0) -> list[Pair]:
    """Description pairs, plus up to ``ict`` inverse-cloze pairs per article."""
    pairs = [Pair(a.description, a.text, group=a.title) for a in fit]
    if ict:
        pairs += inverse_cloze([a.text for a in fit], per_passage=ict, seed=seed,
                               groups=[a.title for a in fit])
    return pairs


def _eval_set(cache: HiddenCache, articles: list[Article], questions: list[Article],
              device: torch.device) -> Dataset:
    titles = {a.title: i for i, a in enumerate(articles)}
    cache.ensure([q.description for q in questions], QUERY)
    cache.ensure([a.text for a in articles], DOC)
    return Dataset(cache.packed([q.description for q in questions], QUERY).to(device),
                   cache.packed([a.text for a in articles], DOC).to(device),
                   [titles[q.title] for q in questions], [], list(range(len(articles))))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(
    out: Path = typer.Option(Path("router.safetensors"), help="Router file, or sweep folder."),
    cache_root: Path = typer.Option(Path("bench-out/train/cache"), help="Hidden-state cache."),
    device: str = typer.Option("cpu", help="cpu or cuda (the backbone and the training)."),
    n_val: int = 300,
    n_fit: int = typer.Option(0, help="Training articles; 0 = all the rest."),
    ict: int = typer.Option(1, help="Inverse-cloze pairs per article (0 = none)."),
    variants: str = typer.Option(json.dumps([SHIPPED_CONFIG]),
                                 help="JSON list of TrainConfig overrides."),
    eval_bank: bool = typer.Option(False, help="Also score the benchmark bank from cache."),
    dtype: str = typer.Option("float16", help="Weights dtype in the file."),
    report: Path = typer.Option(Path("bench-out/train/recipe.json"), help="JSON report."),
    batch_tokens: int = typer.Option(4096, help="Padded tokens per backbone forward."),
    val_pool: int = typer.Option(2000, help="Validation pool: the held-out articles plus "
                                 "training articles as distractors, up to this many."),
) -> None:
    torch.manual_seed(0)
    lm = load_model(device=device)
    layers = resolve_msa_layers(ModelShape.of(lm.model), None)
    cache = HiddenCache(cache_root, lm, layers, batch_tokens=batch_tokens)
    val, fit = recipe_articles(n_val, n_fit or None)
    pairs = recipe_pairs(fit, ict)
    start = time.perf_counter()
    data = build_dataset(cache, pairs).to(lm.device)
    val_set = _eval_set(cache, val + fit[: max(0, val_pool - len(val))], val, lm.device)
    split = wiki_split()
    bank = _eval_set(cache, split.bank, split.questions, lm.device) if eval_bank else None
    info: dict[str, Any] = {
        "fit_articles": len(fit), "val_articles": len(val), "pairs": len(data),
        "documents": len(data.docs), "cache_s": time.perf_counter() - start,
        "cache_peak_rss_mb": _rss_mb(), "device": str(lm.device), "runs": []}
    print(json.dumps({k: v for k, v in info.items() if k != "runs"}), flush=True)
    n_desc = len(fit)
    for overrides in json.loads(variants):
        use = data if overrides.get("ict", True) else _first(data, n_desc)
        info["runs"].append(_run(use, val_set, bank, overrides, layers, lm, out, dtype))
        print(json.dumps(info["runs"][-1]), flush=True)
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(info, indent=1))


def _run(data: Dataset, val: Dataset, bank: Dataset | None, overrides: dict[str, Any],
         layers: list[int], lm: Any, out: Path, dtype: str) -> dict[str, Any]:
    cfg = TrainConfig(**{k: v for k, v in overrides.items() if k != "ict"})
    tr = TrainableRouter(ModelShape.of(lm.model), layers, cfg.rank, cfg.seed,
                         cfg.top_tokens).to(lm.device)
    rep = train(data, tr, cfg)
    row: dict[str, Any] = {"config": overrides, "train_s": rep.seconds,
                           "peak_rss_mb": rep.peak_rss_mb, "final_loss": rep.losses[-1],
                           "val": recall_at(tr, val.queries, val.docs, val.pos)}
    if bank is not None:
        row["bank"] = recall_at(tr, bank.queries, bank.docs, bank.pos)
    name = out if out.suffix == ".safetensors" else out / f"router-{_tag(overrides)}.safetensors"
    meta = {"recipe": "python -m msa_agent.train.recipe", "config": cfg.__dict__,
            "data": f"wiki_split().train, unique descriptions, {len(data)} pairs",
            "val": row["val"]}
    save_router(tr, name, model_fingerprint(lm), dtype=dtype, meta=meta)
    tr.to(lm.device)
    row["file"], row["bytes"] = str(name), name.stat().st_size
    return row


def _first(data: Dataset, n: int) -> Dataset:
    """The first ``n`` pairs (the description pairs); the document pool stays whole."""
    return Dataset(Packed(data.queries.data, data.queries.offsets[: n + 1]), data.docs,
                   data.pos[:n], data.negs[:n], data.group)


def _tag(overrides: dict[str, Any]) -> str:
    return "-".join(f"{k}{v}" for k, v in sorted(overrides.items())) or "default"


if __name__ == "__main__":
    typer.run(main)
