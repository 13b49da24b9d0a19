"""Choosing how ``Memory.answer`` reads text, on validation questions (``--split test`` only
reports a choice already made).

    python -m msa_agent.bench.reading --work /tmp/bench/q3/work --out docs/results/reading-val.json

Reopens the msa-agent spaces a ``msa bench --quick`` run left in ``--work`` (facts and
sessions), recalls each validation question's top 5 once with the default recall, and reads
them in every variant below with the suite's shared reader (embedded SmolLM2-135M-Instruct,
greedy, 32 new tokens). So the variants differ only in how the same memories are put in
the prompt:

- ``text`` / ``chunks``: whole memories, or each one's matched chunk and neighbours;
- ``rank`` / ``reverse`` / ``time``: in recall's order, best last, or oldest first;
- ``dated``: each memory prefixed by its date, and the system line saying that the newest of
  disagreeing memories is right;
- ``example``: one worked example turn (``runtime.answer.EXAMPLE``) before the question.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer

from msa_agent.bench import metrics
from msa_agent.bench.answers import default_reader, pick
from msa_agent.bench.tasks import build
from msa_agent.runtime.answer import prompt_ids
from msa_agent.runtime.ask import read_notes
from msa_agent.runtime.results import Scope

K = 5
# name -> (read mode, dated, order, worked example)
VARIANTS: dict[str, tuple[str, bool, str, bool]] = {
    "text, rank": ("text", False, "rank", False),
    "text, reverse": ("text", False, "reverse", False),
    "text, time, dated": ("text", True, "time", False),
    "chunks, rank": ("chunks", False, "rank", False),
    "chunks, reverse": ("chunks", False, "reverse", False),
    "chunks, time": ("chunks", False, "time", False),
    "chunks, time, dated": ("chunks", True, "time", False),
    "chunks, reverse, dated": ("chunks", True, "reverse", False),
    "text, reverse, example": ("text", False, "reverse", True),
    "chunks, reverse, example": ("chunks", False, "reverse", True),
    "chunks, reverse, dated, example": ("chunks", True, "reverse", True),
    "text, reverse, dated": ("text", True, "reverse", False),
    "text, reverse, dated, example": ("text", True, "reverse", True),
}


def evaluate(task_name: str, space: Path, per_split: int, variants: Sequence[str],
             split: str = "val") -> list[dict[str, Any]]:
    """Graded answers of every variant on the task's single-hop questions of ``split``."""
    from msa_agent import Memory

    reader = default_reader()
    single = [q for q in build(task_name, "quick").stages[-1].queries if q.hops == 1]
    qs = [q for q in pick(single, per_split) if q.split == split]
    out = []
    with Memory.open(space, model=reader.lm) as mem:
        engine = mem._engine  # noqa: SLF001 - the dev script drives the runtime's own pieces
        for q in qs:
            hits = engine.recall(q.text, K, Scope(namespace=q.namespace), 1)
            for name in variants:
                mode, with_dates, order, example = VARIANTS[name]
                notes, system = read_notes(engine, q.text, hits, mode, with_dates, order)
                prompt = prompt_ids(reader.lm.tokenizer, q.text, notes, system, example)
                text = reader.generate(prompt, notes, q.text)
                assert q.answer is not None
                out.append({"task": task_name, "variant": name, "qid": q.qid, "kind": q.kind,
                            "answer": text, "gold": q.answer, "prompt_tokens": len(prompt),
                            "correct": metrics.answer_hit(text, q.answer),
                            "f1": metrics.token_f1(text, q.answer)})
            print(q.qid, {o["variant"]: o["correct"] for o in out[-len(variants):]}, flush=True)
    return out


def summary(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Accuracy, F1 and prompt size per (task, kind incl. "all", variant)."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        for kind in ("all", r["kind"]):
            groups.setdefault((r["task"], kind, r["variant"]), []).append(r)
    return [{"task": t, "kind": k, "variant": v, "n": len(g),
             "accuracy": sum(r["correct"] for r in g) / len(g),
             "f1": sum(r["f1"] for r in g) / len(g),
             "prompt_tokens": sum(r["prompt_tokens"] for r in g) / len(g)}
            for (t, k, v), g in groups.items()]


def main(work: Path = typer.Option(..., help="--work folder of a `msa bench --quick` run"),
         out: Path = typer.Option(Path("reading-val.json")),
         tasks: list[str] = typer.Option(["facts", "sessions"], "--task"),
         per_split: int = typer.Option(30, help="validation questions per task (single-hop)"),
         variants: list[str] = typer.Option(list(VARIANTS), "--variant"),
         split: str = typer.Option("val", help="val to choose; test only to report a choice")
         ) -> None:
    rows = []
    for t in tasks:
        rows += evaluate(t, work / t / "msa" / "msa" / "space", per_split, variants, split)
    table = summary(rows)
    out.write_text(json.dumps({"command": "python -m msa_agent.bench.reading", "split": split,
                               "work": str(work),
                               "k": K, "summary": table, "answers": rows}, indent=1))
    for r in table:
        print(f"{r['task']:10} {r['kind']:18} {r['variant']:22} n={r['n']:3} "
              f"acc {r['accuracy']:.2f} F1 {r['f1']:.2f} prompt {r['prompt_tokens']:.0f}")


if __name__ == "__main__":
    typer.run(main)
