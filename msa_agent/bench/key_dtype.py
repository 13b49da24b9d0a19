"""Resident routing keys in a narrower dtype, on real text: top-k agreement with float32.

    python -m msa_agent.bench.key_dtype --space /tmp/bench/f2new/work/wiki/msa/msa/space \
        --task wiki --mode full --out docs/results/key-dtype-val.json

Opens one finished task space (the suite's memories, encoded by the embedded model and its
shipped router) once per ``routing_key_dtype`` and routes the task's **val** questions with
MSA routing alone (``recall(routing="msa", k=16)``): the overlap of each dtype's top 16 with
float32's, how often the top 1 is the same, the suite's R@1 / R@5, and the resident key
bytes. The space is opened read-only; nothing is re-encoded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from msa_agent.bench import metrics
from msa_agent.bench.systems import dedupe
from msa_agent.bench.tasks import build
from msa_agent.runtime.routing import KEY_DTYPES

DTYPES = tuple(KEY_DTYPES)  # float32 first: the reference
K = 16


def route_all(space: Path, key_dtype: str, queries: list[Any]) -> dict[str, Any]:
    """Each query's top-``K`` memory ids and keys with keys resident as ``key_dtype``."""
    from msa_agent import Memory

    with Memory.open(space, read_only=True, routing_key_dtype=key_dtype) as mem:
        index = mem._engine.index  # the resident keys' footprint, as held
        nbytes = index.keys.numel() * index.keys.element_size()
        nbytes += 0 if index.key_scale is None else index.key_scale.numel() * 4
        hits = [mem.recall(q.text, k=K, namespace=q.namespace, routing="msa") for q in queries]
    return {"ids": [[h.id for h in hs] for hs in hits], "key_bytes": nbytes,
            "keys": [dedupe([h.metadata["key"] for h in hs], 5) for hs in hits]}


def agreement(got: list[list[str]], ref: list[list[str]]) -> dict[str, float]:
    over = [len(set(g) & set(r)) / max(len(r), 1) for g, r in zip(got, ref)]
    top1 = [g[:1] == r[:1] for g, r in zip(got, ref)]
    return {"overlap_at_16": sum(over) / len(over), "min_overlap": min(over),
            "same_top1": sum(top1) / len(top1), "identical_lists": sum(g == r for g, r in
                                                                     zip(got, ref)) / len(ref)}


def main(space: Path = typer.Option(...), task: str = typer.Option(...),
         mode: str = typer.Option("full"), out: Path = typer.Option(...)) -> None:
    queries = [q for q in build(task, mode).stages[-1].queries if q.split == "val"]
    runs = {dt: route_all(space, dt, queries) for dt in DTYPES}
    rows = []
    for dt, run in runs.items():
        score = next(r for r in metrics.score(queries, run["keys"]) if r["kind"] == "all")
        rows.append({"key_dtype": dt, "key_bytes": run["key_bytes"],
                     "r1": score["r1"], "r5": score["r5"], "n": score["n"],
                     **agreement(run["ids"], runs["float32"]["ids"])})
        print(json.dumps(rows[-1]), flush=True)
    doc = {"command": f"python -m msa_agent.bench.key_dtype --space {space} --task {task} "
                      f"--mode {mode} --out {out}", "split": "val", "k": K, "rows": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    typer.run(main)
