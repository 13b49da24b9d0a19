"""Choose hybrid recall's fusion settings on the suite's VALIDATION splits only.

    python -m msa_agent.bench.tune --tasks facts sessions wiki longmemeval \
        --out docs/results/fusion_val.json

Each task's memories are remembered once (through the public API, with ``at=`` from their
chronological order) into a space under ``--work``; every setting in the grid then reopens
that space with its config overrides (the model is loaded once and shared) and scores the
validation queries at k = 5. Test queries are never run here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import typer

from msa_agent.bench import metrics
from msa_agent.bench.systems import dedupe
from msa_agent.bench.tasks import Query, Task, build
from msa_agent.bench.tasks.base import MemoryItem

K = 5
EPOCH = datetime(2020, 1, 1, tzinfo=timezone.utc)
GRID: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("msa", {}, {"routing": "msa"}),
    ("lexical", {}, {"routing": "lexical"}),
    *[(f"rrf w_lex={w} k={c}", {"fusion": "rrf", "lexical_weight": w, "rrf_k": c}, {})
      for w in (1.0, 2.0, 4.0) for c in (10, 60)],
    *[(f"sum w_lex={w}", {"fusion": "sum", "lexical_weight": w}, {}) for w in (1.0, 2.0, 4.0)],
]
RECENCY = (0.0, 0.02, 0.05, 0.1, 0.2)


def remember(task: Task, path: Path, lm: Any) -> None:
    """Ingest the task's last stage (all its memories) once; a marker file says it is done."""
    from msa_agent import Memory

    if (path / ".ingested").exists():
        return
    items: Sequence[MemoryItem] = task.stages[-1].memories
    with Memory.open(path, lm) as mem:
        for s in range(0, len(items), 64):
            mem.remember_many([
                {"text": m.text, "namespace": m.namespace, "kind": "session",
                 "metadata": {"key": m.key}, "at": EPOCH + timedelta(minutes=m.order)}
                for m in items[s:s + 64]])
    (path / ".ingested").touch()


def search(mem: Any, q: Query, opts: dict[str, Any]) -> list[str]:
    """``K`` distinct memory keys (a long memory may come back in several parts)."""
    fetch = K
    while True:
        hits = mem.recall(q.text, k=fetch, namespace=q.namespace, **opts)
        keys = dedupe([h.metadata["key"] for h in hits], K)
        if len(keys) == K or len(hits) < fetch:
            return keys
        fetch *= 4


def evaluate(path: Path, lm: Any, overrides: dict[str, Any], opts: dict[str, Any],
             queries: Sequence[Query]) -> dict[str, Any]:
    from msa_agent import Memory

    with Memory.open(path, lm, **overrides) as mem:
        start = time.perf_counter()
        rankings = [search(mem, q, opts) for q in queries]
        ms = 1000 * (time.perf_counter() - start) / max(1, len(queries))
    rows = metrics.score(queries, rankings)
    return {"rows": rows, "ms_per_query": ms}


def main(
    tasks: list[str] = typer.Option(["facts", "sessions", "wiki"], "--tasks"),
    mode: str = typer.Option("quick", help="Task size: quick or full."),
    work: Path = typer.Option(Path("bench-out/tune"), help="Spaces, reused between runs."),
    out: Path = typer.Option(Path("docs/results/fusion_val.json")),
) -> None:
    from msa_agent.model.loader import load_model

    lm = load_model(None)
    report: dict[str, Any] = {"command": "python -m msa_agent.bench.tune --tasks "
                              + " ".join(tasks) + f" --mode {mode}", "k": K, "results": []}
    for name in tasks:
        task = build(name, mode)
        val = [q for q in task.stages[-1].queries if q.split == "val"]
        path = work / f"{name}-{mode}"
        remember(task, path, lm)
        for row, overrides, opts in _grid(val):
            res = evaluate(path, lm, overrides, opts, _select(val, opts))
            report["results"].append({"task": name, "row": row, "overrides": overrides,
                                      "opts": opts, **res})
            total = next(r for r in res["rows"] if r["kind"] == "all")
            print(f"{name:12s} {row:34s} R@1 {total['r1']:.3f} R@5 {total['r5']:.3f} "
                  f"newest {total.get('newest_first', float('nan')):.3f} "
                  f"n={total['n']} {res['ms_per_query']:.0f} ms", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))


def _grid(val: Sequence[Query]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    rows = list(GRID)
    rows += [(f"rrf k=60 recency={r}", {"recency_weight": r}, {}) for r in RECENCY]
    if any(q.hops > 1 for q in val):
        rows += [("hybrid hops=auto (multi-hop only)", {}, {"hops": "auto"}),
                 ("hybrid hops=1 (multi-hop only)", {}, {"hops": 1, "_multihop": True})]
    return rows


def _select(val: Sequence[Query], opts: dict[str, Any]) -> list[Query]:
    multihop = opts.pop("_multihop", False) or opts.get("hops") == "auto"
    return [q for q in val if q.hops > 1] if multihop else list(val)


if __name__ == "__main__":
    typer.run(main)
