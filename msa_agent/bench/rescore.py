"""Re-score msa-agent on a finished ``msa bench`` run's spaces, without re-encoding.

    python -m msa_agent.bench.rescore --work /tmp/bench/q1/work --out docs/results/recall-final.json

Recall settings changed after the suite ran (they are chosen on validation splits with
``msa_agent.bench.tune``); the memories and questions did not. This opens each task's
msa-agent space from that run (same memories, same questions as the baselines' rows) with the
current defaults and scores every routing mode, and ``hops="auto"`` on multi-hop questions,
on both splits. Spaces are copied first, so the run's own files are never changed.

``--split val --top-tokens 1 2 3`` compares settings of the routing rule's query side
(``route_top_tokens``) on the validation questions only, as model selection must:

    python -m msa_agent.bench.rescore --work /tmp/bench/f2/work --mode full --tasks wiki \
        --split val --top-tokens 1 --top-tokens 2 --top-tokens 3 --out rule-val.json
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import typer

from msa_agent.bench import metrics
from msa_agent.bench.suite import K, machine_info
from msa_agent.bench.systems import dedupe
from msa_agent.bench.tasks import build

MODES = ("hybrid", "msa", "lexical")


def keys(mem: Any, text: str, namespace: str, **opts: Any) -> list[str]:
    hits = mem.recall(text, k=4 * K, namespace=namespace, **opts)
    return dedupe([h.metadata["key"] for h in hits], K)


def rows_for(mem: Any, task: str, queries: list[Any]) -> list[dict[str, Any]]:
    out = []
    for mode in MODES:
        rankings = [keys(mem, q.text, q.namespace, routing=mode) for q in queries]
        out += [{"task": task, "system": f"msa-agent {mode}", **r}
                for r in metrics.score(queries, rankings)]
    hop = [q for q in queries if q.hops > 1]
    if hop:
        rankings = [keys(mem, q.text, q.namespace, hops="auto") for q in hop]
        out += [{"task": task, "system": "msa-agent hops=auto", **r}
                for r in metrics.score(hop, rankings)]
    return out


def main(work: Path = typer.Option(..., help="The work folder of a finished msa bench run."),
         tasks: list[str] = typer.Option(["facts", "wiki", "sessions", "longmemeval"]),
         mode: str = typer.Option("quick"),
         split: list[str] = typer.Option(["val", "test"], help="Splits to score."),
         top_tokens: list[int] = typer.Option(
             [], help="route_top_tokens settings to score (default: the space's own)."),
         router_path: str | None = typer.Option(
             None, help="Route with this router file (the space is re-encoded with it); "
             "default: the router the space names."),
         out: Path = typer.Option(Path("docs/results/recall-final.json"))) -> None:
    from msa_agent import Memory
    from msa_agent.model.loader import load_model

    lm = load_model(None)
    quality: list[dict[str, Any]] = []
    for name in tasks:
        queries = [q for q in build(name, mode).stages[-1].queries if q.split in split]
        with tempfile.TemporaryDirectory() as tmp:
            space = Path(tmp) / "space"
            shutil.copytree(work / name / "msa" / "msa" / "space", space)
            for top in top_tokens or [None]:
                opts: dict[str, Any] = {} if top is None else {"route_top_tokens": top}
                if router_path:
                    opts["router_path"] = router_path
                with Memory.open(space, lm, **opts) as mem:
                    rows = rows_for(mem, name, queries)
                    quality += [{**r, "route_top_tokens": mem.config.route_top_tokens}
                                for r in rows]
        for r in quality:
            if r["task"] == name and r["kind"] == "all":
                print(f"{name:12s} {r['split']:5s} top{r['route_top_tokens']} "
                      f"{r['system']:22s} R@1 {r['r1']:.3f} R@5 {r['r5']:.3f} n={r['n']}",
                      flush=True)
    doc = {"command": f"python -m msa_agent.bench.rescore --work {work} "
                      + " ".join(f"--tasks {t}" for t in tasks) + f" --mode {mode} "
                      + " ".join(f"--split {s}" for s in split)
                      + "".join(f" --top-tokens {t}" for t in top_tokens)
                      + (f" --router-path {router_path}" if router_path else ""),
           "machine": machine_info(), "k": K, "quality": quality}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, default=str))


if __name__ == "__main__":
    typer.run(main)
