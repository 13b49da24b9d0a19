"""Finer routing keys: MSA routing alone at several chunk sizes P, through the real runtime.

    cd /tmp && python -m msa_agent.bench.chunk_size --sizes 64 --sizes 16 \
        --router ROUTER.safetensors --out chunk-size-val.json

Each (task, P) gets a fresh space made with ``chunk_size=P`` (the routing keys and the pooled
K/V are P-token means), the task's memories as the suite stores them, and the **val**
questions through ``recall(routing="msa", k=5)``; rows from the suite's metrics, plus the
routing keys' bytes and the recall p50. Validation only: this chooses a setting.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import typer

from msa_agent.bench import metrics
from msa_agent.bench.tasks import build
from msa_agent.bench.tune import remember_items


def run(task_name: str, mode: str, size: int, router: str | None, work: Path,
        model: Any = None) -> dict[str, Any]:
    """One task at one chunk size (``model``: as ``Memory.open`` takes it; None = default)."""
    from msa_agent import Memory

    task = build(task_name, mode)
    val = [q for q in task.stages[-1].queries if q.split == "val"]
    path = work / f"{task_name}-{mode}-p{size}"
    shutil.rmtree(path, ignore_errors=True)
    extra = {"router_path": router} if router else {}
    start = time.perf_counter()
    with Memory.open(path, model, chunk_size=size, **extra) as mem:
        remember_items(mem, [m for m in task.stages[-1].memories
                             if m.namespace in {q.namespace for q in val}])
        ingest_s = time.perf_counter() - start
        rankings, times = [], []
        for q in val:
            t = time.perf_counter()
            hits = mem.recall(q.text, k=5, namespace=q.namespace, routing="msa")
            times.append(time.perf_counter() - t)
            rankings.append(list(dict.fromkeys(h.metadata["key"] for h in hits)))
        stats = mem.stats()
    return {"task": task_name, "mode": mode, "chunk_size": size,
            "rows": metrics.score(val, rankings), "ingest_s": round(ingest_s, 1),
            "recall_p50_ms": round(1000 * metrics.percentile(times, 50), 1),
            "stats": _sizes(stats)}


def _sizes(stats: Any) -> dict[str, int]:
    return {"memories": stats.memories, "tokens": stats.tokens, "chunks": stats.chunks,
            "bytes_on_disk": stats.bytes_on_disk}


def main(
    tasks: list[str] = typer.Option(["facts", "wiki"], "--tasks"),
    mode: str = typer.Option("full", help="Task size: quick or full."),
    sizes: list[int] = typer.Option([64, 16], "--sizes"),
    router: str = typer.Option("", help="Router file (default: the shipped one)."),
    work: Path = typer.Option(Path("bench-out/chunk-size")),
    out: Path = typer.Option(Path("docs/results/chunk-size-val.json")),
) -> None:
    report: dict[str, Any] = {"router": router or "shipped", "results": []}
    for name in tasks:
        for size in sizes:
            res = run(name, mode, size, router or None, work)
            report["results"].append(res)
            rows = {r["kind"]: r for r in res["rows"]}
            total = rows.get("single-hop", rows["all"])
            print(f"{name:10s} P={size:3d} R@1 {total['r1']:.3f} R@5 {total['r5']:.3f} "
                  f"p50 {res['recall_p50_ms']} ms {res['stats']}", flush=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    typer.run(main)
