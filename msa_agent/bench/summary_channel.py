"""The summary channel (``summary_layer``) through the public API, per task and split.

    python -m msa_agent.bench.summary_channel --tasks facts --tasks wiki --split val \
        --out docs/results/summary-channel-val.json

Each task's memories (those of the split's namespaces) are remembered once into a space with
``summary_layer`` (``--layer``), timed, under ``--work``. Each query's channel pools are read
once through the runtime's own ``channel_pools`` (as ``routing="msa"`` and ``"hybrid"``
recall), then every setting fuses them with the runtime's own ``_fused`` and the fusion its
config makes (``fusion_of``), top 5 distinct memories. ``summary_weight`` 0 rows fuse the
pools a recall with the channel off fuses (no summary channel, MSA completed with the
lexical candidates only), as a space without summaries routes. Settings are chosen on
``--split val``; ``test`` only reports a choice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import typer

from msa_agent.bench import metrics
from msa_agent.bench.systems import dedupe
from msa_agent.bench.tasks import Query, Task, build
from msa_agent.bench.tune import remember
from msa_agent.runtime.engine import fusion_of
from msa_agent.runtime.fusion import LEXICAL, MSA, SUMMARY, Fusion, Ranking, without_word_rules
from msa_agent.runtime.results import Scope
from msa_agent.runtime.routing import GrowableRows, unit

K = 5
POOL = 50  # = MemoryConfig.fusion_pool
# (row, recall's routing, config overrides): MSA alone and the default hybrid, each without
# the channel (weight 0) and with it at a few weights, its cosines over the pool's best
# ("summary_weight=" rows, the first measured), min-max or z-scores within the pool; rrf for
# the two-channel MSA row too
BY_BEST = {"summary_norm": "max"}
SETTINGS: list[tuple[str, str, dict[str, Any]]] = [
    *[(f"msa summary_weight={w}", "msa", {"summary_weight": w, **BY_BEST})
      for w in (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)],
    *[(f"msa summary rrf w={w}", "msa", {"summary_weight": w, "fusion": "rrf"})
      for w in (1.0, 2.0, 4.0)],
    *[(f"hybrid summary_weight={w}", "hybrid", {"summary_weight": w, **BY_BEST})
      for w in (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)],
    *[(f"{r} {norm} w={w}", r, {"summary_weight": w, "summary_norm": norm})
      for r in ("msa", "hybrid")
      for norm, ws in (("minmax", (0.25, 0.5, 1.0, 2.0, 4.0)),
                       ("z", (0.03125, 0.0625, 0.09375, 0.125, 0.25, 0.5, 1.0)))
      for w in ws],
]


def without_summary(channels: dict[str, Ranking]) -> dict[str, Ranking]:
    """The pools a recall with the channel off would fuse: no summary channel, and the MSA
    pool completed with the lexical candidates only (its own ``POOL`` best are the completed
    list's first ``POOL``: completion only adds lower scores)."""
    msa = list(channels[MSA])
    lexical = {i for i, _ in channels.get(LEXICAL, [])}
    own = msa[:POOL]
    mine = {i for i, _ in own}
    out = {c: r for c, r in channels.items() if c not in (SUMMARY, MSA)}
    out[MSA] = [*own, *[x for x in msa[POOL:] if x[0] in lexical and x[0] not in mine]]
    return out


def pools(mem: Any, query: Query) -> dict[str, dict[str, Ranking]]:
    """The query's channel pools as ``routing="msa"`` and ``"hybrid"`` recall fuse them (the
    runtime's ``channel_pools``, summary channel on)."""
    eng = mem._engine
    scope = Scope(namespace=query.namespace)
    q = eng.query(query.text)
    return {mode: eng.channel_pools([query.text], POOL, scope, set(), [q], mode)[0][0]
            for mode in ("msa", "hybrid")}


def cached_pools(mem: Any, queries: list[Query], file: Path
                 ) -> list[dict[str, dict[str, Ranking]]]:
    """:func:`pools` of every query, read once and kept in ``file`` (the space's own: its
    memories and settings make them)."""
    if file.exists():
        return [{m: {c: distinct(r) for c, r in p.items()} for m, p in q.items()}
                for q in json.loads(file.read_text())]
    made = [pools(mem, q) for q in queries]
    file.write_text(json.dumps(made))
    return made


def split_queries(task: Task, split: str) -> list[Query]:
    """The questions of ``task``'s ``split`` (its last stage)."""
    return [q for q in task.stages[-1].queries if q.split == split]


def space_path(work: Path, name: str, split: str, layer: int) -> Path:
    """Where :func:`run_task` keeps the space of ``name``'s ``split`` under ``work``."""
    return work / f"{name}-full-{split}-summary{layer}"


@contextmanager
def cached_space(name: str, split: str, layer: int, work: Path, lm: Any
                 ) -> Iterator[tuple[Any, list[Query], list[dict[str, dict[str, Ranking]]]]]:
    """The space :func:`run_task` built for ``name``'s ``split`` under ``work``, open, with
    the split's queries and their cached pools (for scripts that fuse them their own way)."""
    from msa_agent import Memory

    queries = split_queries(build(name, "full"), split)
    path = space_path(work, name, split, layer)
    with Memory.open(path, lm) as mem:
        yield mem, queries, cached_pools(mem, queries, path / f"pools-{split}.json")


def each_space(work: Path, tasks: Sequence[str], split: str = "val"
               ) -> Iterator[tuple[str, Any, list[Query], list[torch.Tensor]]]:
    """For the summary probes: each task's space under ``work`` open on the embedded model
    (float32), with its ``split``'s questions and their routing queries (computed once)."""
    from msa_agent.model.loader import load_model

    lm = load_model(None, dtype="float32")
    for name in tasks:
        with cached_space(name, split, -1, work, lm) as (mem, queries, _):
            yield name, mem, queries, [mem._engine.query(q.text) for q in queries]


def distinct(ranking: Ranking) -> list[tuple[str, float]]:
    """``ranking`` with each id once (its first, best entry): pools cached before the MSA
    completion took each candidate once held the candidates of two channels twice."""
    seen: set[str] = set()
    return [(i, s) for i, s in ranking if not (i in seen or seen.add(i))]


def ranking(mem: Any, query: Query, channels: dict[str, Ranking], f: Fusion) -> list[str]:
    """``K`` distinct memory keys of the runtime's fusion of ``channels`` by ``f``."""
    hits = mem._engine._fused(channels, POOL, None, query.text, f)
    return dedupe([h.memory.metadata["key"] for h in hits], K)


def swapped_rows(mem: Any, queries: list[Query], routes: list[Any], docs: torch.Tensor,
                 asked: torch.Tensor, weights: Sequence[float], label: str
                 ) -> dict[str, list[dict[str, Any]]]:
    """Val rows of the summary channel with other vectors: ``docs`` ``[M, hidden]`` in the
    index's order replace the memories' (in this open space only, never on disk), ``asked``
    ``[len(queries), hidden]`` the questions'. Each query's pools through the runtime's
    ``channel_pools`` (``routes``: its routing queries, computed once), fused as the bench
    does, MSA alone and hybrid, z-scores at each of ``weights``. Rows are named
    ``"{label} | {mode} z w={w}"``; probes of a readout, a whitening or a projection use it."""
    eng = mem._engine
    eng.index._summary = GrowableRows(torch.empty(0))
    eng.index._summary.append(unit(docs.float()))  # cosines: unit rows, as _add_summary
    by_text = dict(zip([q.text for q in queries], unit(asked.float())))
    eng.summary_vectors = lambda texts: torch.stack([by_text[t] for t in texts])
    pooled = [{mode: eng.channel_pools([q.text], POOL, Scope(namespace=q.namespace), set(),
                                       [v], mode)[0][0] for mode in ("msa", "hybrid")}
              for q, v in zip(queries, routes)]
    out = {}
    for mode in ("msa", "hybrid"):
        for w in weights:
            row = f"{label} | {mode} z w={w}"
            out[row] = fused_rows(mem, queries, [p[mode] for p in pooled], mode,
                                  {"summary_weight": w, "summary_norm": "z"})
            print(f"{row:40s} {row_line(out[row])}", flush=True)
    return out


def fused_rows(mem: Any, queries: list[Query], pools: list[dict[str, Ranking]], routing: str,
               overrides: dict[str, Any]) -> list[dict[str, Any]]:
    """Metric rows of each query's ``pools`` fused as ``routing`` recall fuses them under the
    space's config with ``overrides`` (MSA alone leaves out the rules on the question's
    words), top ``K`` distinct memories."""
    f = fusion_of(mem.config.model_copy(update=overrides))
    f = without_word_rules(f) if routing == "msa" else f
    return metrics.score(queries, [ranking(mem, q, p, f) for q, p in zip(queries, pools)])


def row_line(rows: list[dict[str, Any]]) -> str:
    """R@1 / R@5 of each kind, for a progress line."""
    return "  ".join(f"{r['kind']} {r['r1']:.3f}/{r['r5']:.3f}" for r in rows)


def run_task(name: str, split: str, layer: int, work: Path, lm: Any,
             only: list[str]) -> dict[str, Any]:
    from msa_agent import Memory

    task = build(name, "full")
    queries, path = split_queries(task, split), space_path(work, name, split, layer)
    t0 = time.perf_counter()
    remember(task, path, lm, {q.namespace for q in queries}, {"summary_layer": layer})
    out: dict[str, Any] = {"task": name, "split": split, "summary_layer": layer,
                           "queries": len(queries), "space": str(path),
                           "ingest_s": time.perf_counter() - t0, "rows": {}}
    with Memory.open(path, lm, summary_weight=1.0) as mem:
        cached = cached_pools(mem, queries, path / f"pools-{split}.json")
        for row, routing, overrides in SETTINGS:
            if only and row not in only:
                continue
            off = overrides["summary_weight"] == 0
            pools = [without_summary(p[routing]) if off else p[routing] for p in cached]
            out["rows"][row] = fused_rows(mem, queries, pools, routing, overrides)
            print(f"{name:12s} {split} {row:28s} {row_line(out['rows'][row])}", flush=True)
    return out


def main(
    tasks: list[str] = typer.Option(["facts", "wiki"], "--tasks"),
    split: str = typer.Option("val", help="val to choose; test only to report a choice."),
    layer: int = typer.Option(-2, help="summary_layer of the spaces."),
    work: Path = typer.Option(Path("bench-out/summary"), help="Spaces, reused between runs."),
    out: Path = typer.Option(Path("docs/results/summary-channel-val.json")),
    row: list[str] = typer.Option([], "--row", help="Only these settings (default: all); "
                                  "a test run names the rows chosen on val."),
) -> None:
    from msa_agent.model.loader import load_model

    lm = load_model(None, dtype="float32")
    report = [run_task(t, split, layer, work, lm, row) for t in tasks]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    typer.run(main)
