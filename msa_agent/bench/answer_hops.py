"""Answers to two-hop and changed-fact questions (issue 14's targets: two-hop >= 0.3, the
newest value of a changed fact >= 0.8), on the full-size suite's spaces.

    python -m msa_agent.bench.answer_hops --work /tmp/full/work --split test \
        --out docs/results/answer-hops-test.json

``--work`` holds finished msa-agent spaces in the suite's layout
(``TASK/msa/msa/space``, as ``msa bench`` or ``tune`` leaves them). For each task's
questions of the asked kinds (two-hop facts; two-hop and changed-fact sessions; with
``--every-kind`` single-hop ones too), four rows
are read by the same reader in the same frame, at the same k (``MemoryConfig.answer_k``):

- ``msa-agent answer read=text``: ``Memory.answer(q, read="text")``, one round, whole texts;
- ``msa-agent answer read=text hops=auto``: the same with memory interleave;
- ``msa-agent answer read=chunks``: ``Memory.answer(q, read="chunks")`` (each memory's
  matched chunk and its neighbours instead of the whole text; the default for models not
  trained for MSA since it measured best on the sessions' val split);
- ``RAG BM25``: the suite's BM25 baseline's top-k texts (``answer_stage.read``).

Accuracy = the normalised gold answer inside the answer (``answer_stage.grade``); for a changed
fact the gold answer is the newest value. Nothing is chosen here: it reports.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer

from msa_agent.bench import answer_stage
from msa_agent.bench.answer_k import rag_rankings
from msa_agent.bench.answers import default_reader
from msa_agent.bench.tasks import build
from msa_agent.bench.tasks.base import Query, Task

# row -> Memory.answer options
MSA_ROWS: dict[str, dict[str, Any]] = {
    "msa-agent answer read=text": {"hops": 1, "read": "text"},
    "msa-agent answer read=text hops=auto": {"hops": "auto", "read": "text"},
    "msa-agent answer read=chunks": {"hops": 1, "read": "chunks"},
    "msa-agent answer read=chunks hops=auto": {"hops": "auto", "read": "chunks"},
}
RAG_ROW = "RAG BM25"


def wanted(q: Query, every_kind: bool = False) -> bool:
    """The questions these targets are about: more than one hop, or a changed fact (with
    ``every_kind``, single-hop ones too)."""
    return every_kind or q.hops > 1 or q.metric == "newest"


def questions(task: Task, split: str, per_kind: int, every_kind: bool = False) -> list[Query]:
    """Up to ``per_kind`` questions of each wanted kind of ``split``, in task order."""
    taken: dict[str, int] = defaultdict(int)
    out = []
    for q in task.stages[-1].queries:
        if q.split == split and wanted(q, every_kind) and q.answer and taken[q.kind] < per_kind:
            taken[q.kind] += 1
            out.append(q)
    return out


def evaluate(task: Task, qs: Sequence[Query], space: Path, scratch: Path,
             rows: Sequence[str] = (*MSA_ROWS, RAG_ROW), settings: dict[str, Any] | None = None
             ) -> list[dict[str, Any]]:
    """Each question read by each of ``rows``; ``settings``: ``Memory.open`` overrides."""
    from msa_agent import Memory

    memories = {m.key: m for m in task.stages[-1].memories}
    out: list[dict[str, Any]] = []
    with Memory.open(space, default_reader().lm, **(settings or {})) as mem:
        k = mem.config.answer_k  # and the answer format: the RAG row's reader uses it too
        reader = replace(default_reader(), answer_format=mem.config.answer_format)
        rag = rag_rankings(task, qs, scratch, k, {RAG_ROW: "bm25"})[RAG_ROW] \
            if RAG_ROW in rows else {}
        for q in qs:
            for row in rows:
                got = answer_row(mem, reader, q, row, k) if row in MSA_ROWS else {
                    "system": RAG_ROW, "k": k,
                    **answer_stage.read(reader, q, [memories[key] for key in rag[q.qid][:k]])}
                out.append({"task": task.name, **got})
            print(q.qid, q.kind, [int(bool(o["correct"])) for o in out[-len(rows):]], flush=True)
    return out


def answer_row(mem: Any, reader: Any, q: Query, row: str, k: int) -> dict[str, Any]:
    """``Memory.answer`` with ``row``'s options, graded."""
    start = time.perf_counter()
    ans = mem.answer(q.text, namespace=q.namespace, **MSA_ROWS[row],
                     max_new_tokens=reader.max_new_tokens)
    ms = 1000 * (time.perf_counter() - start)
    keys = [h.metadata.get("key", "") for r in ans.rounds for h in r.memories]
    return {"system": row, "k": k,
            **answer_stage.grade(q, ans.text, ms, ans.prompt_tokens, False, keys)}


def parse_settings(options: Sequence[str]) -> dict[str, Any]:
    """``NAME=JSON`` options (``read_superseded=false``) -> ``Memory.open`` overrides."""
    out = {}
    for option in options:
        name, sep, value = option.partition("=")
        if not sep:
            raise typer.BadParameter(f"--set takes NAME=VALUE, got {option!r}")
        out[name] = json.loads(value)
    return out


def summary(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Accuracy per (task, kind, system)."""
    groups: dict[tuple[str, str, str], list[bool]] = defaultdict(list)
    for r in rows:
        groups[r["task"], r["kind"], r["system"]].append(bool(r["correct"]))
    return [{"task": t, "kind": kind, "system": s, "n": len(v), "accuracy": sum(v) / len(v)}
            for (t, kind, s), v in sorted(groups.items())]


def main(work: Path = typer.Option(..., help="Finished spaces: TASK/msa/msa/space."),
         split: str = typer.Option("test"),
         tasks: list[str] = typer.Option(["facts", "sessions"], "--task"),
         per_kind: int = typer.Option(30, help="Questions per kind and split, at most."),
         every_kind: bool = typer.Option(False, help="Single-hop kinds too."),
         row: list[str] = typer.Option([], "--row", help="Rows to read (default: all)."),
         setting: list[str] = typer.Option([], "--set", help="Memory.open override, "
                                           "NAME=JSON (e.g. read_superseded=false)."),
         out: Path = typer.Option(Path("answer-hops.json"))) -> None:
    from msa_agent.bench.suite import machine_info

    chosen = row or [*MSA_ROWS, RAG_ROW]
    if unknown := [r for r in chosen if r not in (*MSA_ROWS, RAG_ROW)]:
        raise typer.BadParameter(f"unknown --row {unknown}; rows: {[*MSA_ROWS, RAG_ROW]}")
    settings = parse_settings(setting)
    rows: list[dict[str, Any]] = []
    for name in tasks:
        task = build(name, "full")
        qs = questions(task, split, per_kind, every_kind)
        rows += evaluate(task, qs, work / name / "msa" / "msa" / "space", work / name / "rag",
                         chosen, settings)
    doc = {"command": f"python -m msa_agent.bench.answer_hops --work {work} --split {split} "
                      + " ".join(f"--task {t}" for t in tasks) + f" --per-kind {per_kind}"
                      + (" --every-kind" if every_kind else "")
                      + "".join(f" --row '{r}'" for r in row)
                      + "".join(f" --set {o}" for o in setting),
           "settings": settings, "machine": machine_info(), "summary": summary(rows),
           "rows": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, default=str))
    for s in doc["summary"]:
        print(f"{s['task']:9s} {s['kind']:22s} {s['system']:28s} {s['accuracy']:.2f} n={s['n']}")


if __name__ == "__main__":
    typer.run(main)
