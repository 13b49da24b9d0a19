"""How many recalled memories a small reader should read (issue 14): answers at k = 1, 2, 5.

    python -m msa_agent.bench.answer_k --split val --out docs/results/answer-k-val.json

The answer stage reads k = 5 memories for every system. A 135M reader given five similar
memories often answers from the wrong one even when the right one is first. This runs the
single-hop questions of the quick facts and sessions tasks (the answer stage's own pick: 30 a
split, multi-hop left out) through each system at several k, every system read by the same
reader in the same frame (``bench.answers`` and ``answer_stage.read``):

- ``msa-agent answer``: ``Memory.answer(q, k=k)`` with its defaults, on a space filled by the
  suite's ``MsaAgent`` (the recall stage's ingest);
- ``RAG BM25`` and ``RAG MiniLM windows``: the suite's baselines' top-k texts.

Choose on ``--split val``; ``--split test`` only reports a choice. Accuracy = the normalised
gold answer inside the answer (``metrics.answer_hit``).
"""

from __future__ import annotations

import json
import shutil
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer

from msa_agent.bench import answer_stage
from msa_agent.bench.answers import default_reader, pick
from msa_agent.bench.tasks import build
from msa_agent.bench.tasks.base import Query, Task

KS = (1, 2, 5)
RAG = {"RAG BM25": "bm25", "RAG MiniLM windows": "minilm-windows"}  # row -> suite system
MSA_ROW = "msa-agent answer"


def questions(task: Task, split: str, per_split: int) -> list[Query]:
    """The answer stage's questions of ``split`` that one memory answers."""
    return [q for q in pick(task.stages[-1].queries, per_split) if q.split == split and q.hops == 1]


def rag_rankings(task: Task, qs: Sequence[Query], work: Path, depth: int,
                 rows: dict[str, str] = RAG) -> dict[str, dict[str, list[str]]]:
    """Each baseline's (``rows``: row -> suite system) top-``depth`` keys per question
    (``suite.make_system``, all memories added)."""
    from msa_agent.bench.suite import _ingest, make_system

    out: dict[str, dict[str, list[str]]] = {}
    for row, name in rows.items():
        system = make_system(name, work / name, None)
        try:
            _ingest(system, task.stages[-1].memories)
            opts = next(iter(system.variants().values()))
            out[row] = {q.qid: system.search(q, depth, opts) for q in qs}
        finally:
            system.close()
    return out


def msa_space(task: Task, work: Path) -> Path:
    """A space holding the task's memories, as the recall stage ingests them."""
    from msa_agent.bench.suite import _ingest, make_system

    folder = work / "msa"
    shutil.rmtree(folder, ignore_errors=True)
    system = make_system("msa", folder, None)
    try:
        _ingest(system, task.stages[-1].memories)
    finally:
        system.close()
    return folder / "msa" / "space"


def evaluate(task_name: str, split: str, per_split: int, work: Path,
             ks: tuple[int, ...] = KS) -> list[dict[str, Any]]:
    from msa_agent import Memory

    reader = default_reader()
    task = build(task_name, "quick")
    qs = questions(task, split, per_split)
    rankings = rag_rankings(task, qs, work / task_name, max(ks))
    memories = {m.key: m for m in task.stages[-1].memories}
    mem = Memory.open(msa_space(task, work / task_name), reader.lm)
    out = []
    try:
        for q in qs:
            for k in ks:
                start = time.perf_counter()
                ans = mem.answer(q.text, k=k, namespace=q.namespace,
                                 max_new_tokens=reader.max_new_tokens)
                ms = 1000 * (time.perf_counter() - start)
                keys = [h.metadata.get("key", "") for r in ans.rounds for h in r.memories]
                outs = {MSA_ROW: answer_stage.grade(q, ans.text, ms, ans.prompt_tokens, False,
                                                    keys)}
                for row in RAG:
                    items = [memories[key] for key in rankings[row][q.qid][:k]]
                    outs[row] = answer_stage.read(reader, q, items)
                out += [{"task": task_name, "system": row, "k": k, **o}
                        for row, o in outs.items()]
            print(q.qid, [(o["system"][:8], o["k"], o["correct"]) for o in out[-3 * len(ks):]],
                  flush=True)
    finally:
        mem.close()
    return out


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Accuracy per (task, kind and "all", system, k)."""
    groups: dict[tuple[str, str, str, int], list[bool]] = defaultdict(list)
    for r in rows:
        for kind in (r["kind"], "all"):
            groups[r["task"], kind, r["system"], r["k"]].append(bool(r["correct"]))
    return [{"task": t, "kind": kind, "system": s, "k": k, "n": len(v),
             "accuracy": sum(v) / len(v)} for (t, kind, s, k), v in sorted(groups.items())]


def main(split: str = typer.Option("val", help="val to choose; test only to report a choice"),
         out: Path = typer.Option(Path("answer-k-val.json")),
         tasks: list[str] = typer.Option(["facts", "sessions"], "--task"),
         per_split: int = typer.Option(30, help="answer-stage questions per split (all kinds)"),
         work: Path = typer.Option(Path("bench-out/answer-k"), help="Scratch spaces."),
         ks: list[int] = typer.Option(list(KS), "--k", help="Memories read, per run."),
         ) -> None:
    rows = [r for t in tasks for r in evaluate(t, split, per_split, work, tuple(ks))]
    table = summary(rows)
    out.write_text(json.dumps({
        "command": f"python -m msa_agent.bench.answer_k --split {split} --per-split {per_split} "
                   + "".join(f"--task {t} " for t in tasks) + " ".join(f"--k {k}" for k in ks),
        "split": split, "ks": list(ks), "summary": table, "answers": rows}, indent=1))
    for r in table:
        print(f"{r['task']:9} {r['kind']:17} {r['system']:20} k={r['k']} n={r['n']:3} "
              f"acc {r['accuracy']:.2f}")


if __name__ == "__main__":
    typer.run(main)
