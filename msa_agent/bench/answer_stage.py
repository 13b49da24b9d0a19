"""The answer stage of ``msa bench --answers``: the same questions answered five ways.

On a task's last stage, :func:`msa_agent.bench.answers.pick` chooses a fixed set of questions
that carry a gold answer; each row answers them with the shared reader
(:class:`msa_agent.bench.answers.Reader`):

- ``msa-agent answer``: ``Memory.answer(q, k=5, namespace=..., max_new_tokens=...)`` with its
  defaults, on the space the recall stage built (reopened on the shared model); and
  ``msa-agent answer hops=auto`` on multi-hop questions only;
- ``RAG BM25``, ``RAG MiniLM windows``: the recall stage's top-5 memory keys of those rows
  (their texts, in rank order, cut to the window if needed) in the same frame;
- ``full context``: every memory of the question's namespace (oldest first) when the prompt
  fits the window, else the question is *skipped* (counted, never dropped);
- ``no memory``: the question alone.

Latency is the wall time of producing the answer, retrieval included: for ``msa-agent`` the
whole ``Memory.answer`` call; for a RAG row the recall stage's measured search time of that
question plus building the prompt and generating.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from msa_agent.bench import metrics
from msa_agent.bench.answers import Reader, fit, pick
from msa_agent.bench.tasks.base import MemoryItem, Query, Task, memory_time

K = 5
MULTIHOP = "multihop_only"
MSA_ROWS: dict[str, dict[str, Any]] = {
    "msa-agent answer": {},
    "msa-agent answer hops=auto": {"hops": "auto", MULTIHOP: True},
}
RAG_ROWS = {"RAG BM25": "BM25", "RAG MiniLM windows": "MiniLM windows"}  # -> recall row
FULL, NONE = "full context", "no memory"
# recall row -> question id -> (top-k memory keys, search seconds), from the recall stage
Rankings = dict[str, dict[str, tuple[list[str], float]]]


def grade(
    q: Query, text: str, ms: float, prompt_tokens: int, truncated: bool, context: Sequence[str]
) -> dict[str, Any]:
    """One answered question: the text, its accuracy and F1, and what it cost."""
    gold = q.gold[:1] if q.metric == "newest" else q.gold  # a changed fact: the new memory
    assert q.answer is not None
    return {
        **_asked(q),
        "answer": text,
        "skipped": False,
        "correct": metrics.answer_hit(text, q.answer),
        "f1": metrics.token_f1(text, q.answer),
        "ms": ms,
        "prompt_tokens": prompt_tokens,
        "truncated": truncated,
        "gold_in_context": set(gold) <= set(context),
    }


def _asked(q: Query) -> dict[str, Any]:
    """What every answer row says about its question."""
    return {"qid": q.qid, "split": q.split, "kind": q.kind, "question": q.text, "gold": q.answer}


def skipped(q: Query, prompt_tokens: int, why: str) -> dict[str, Any]:
    return {
        **_asked(q),
        "skipped": why,
        "prompt_tokens": prompt_tokens,
    }


def read(
    reader: Reader, q: Query, items: Sequence[MemoryItem], search_s: float = 0.0
) -> dict[str, Any]:
    """Answer ``q`` from ``items`` (rank order, cut to the window, arranged and dated as
    ``Memory.answer`` arranges its memories), timed from the search."""
    start = time.perf_counter()
    texts, keys = [m.text for m in items], [m.key for m in items]
    prompt, used, cut = fit(reader, q.text, texts, [memory_time(m) for m in items])
    text = reader.generate(prompt, texts[:used], q.text)
    ms = 1000 * (search_s + time.perf_counter() - start)
    return grade(q, text, ms, len(prompt), cut, keys[:used])


def rag_outputs(
    reader: Reader,
    qs: Sequence[Query],
    ranking: Mapping[str, Any],
    memories: Mapping[str, MemoryItem],
) -> list[dict[str, Any]]:
    out = []
    for q in qs:
        keys, search_s = ranking[q.qid]
        out.append(read(reader, q, [memories[k] for k in keys], search_s))
    return out


def full_outputs(
    reader: Reader, qs: Sequence[Query], memories: Mapping[str, MemoryItem]
) -> list[dict[str, Any]]:
    out = []
    for q in qs:
        start = time.perf_counter()
        items = sorted(
            (m for m in memories.values() if m.namespace == q.namespace), key=lambda m: m.order
        )
        prompt = reader.prompt(q.text, [m.text for m in items], [memory_time(m) for m in items])
        if not reader.fits(prompt):
            out.append(
                skipped(q, len(prompt), f"does not fit ({len(prompt)} > {reader.budget} tokens)")
            )
            continue
        text = reader.generate(prompt, [m.text for m in items], q.text)
        ms = 1000 * (time.perf_counter() - start)
        out.append(grade(q, text, ms, len(prompt), False, [m.key for m in items]))
    return out


def none_outputs(reader: Reader, qs: Sequence[Query]) -> list[dict[str, Any]]:
    return [read(reader, q, []) for q in qs]


def msa_outputs(
    reader: Reader, qs: Sequence[Query], space: Path, opts: dict[str, Any]
) -> list[dict[str, Any]]:
    """``Memory.answer`` on the recall stage's space, reopened on the shared model."""
    from msa_agent import Memory

    mem = Memory.open(space, model=reader.lm)
    out = []
    try:
        for q in qs:
            start = time.perf_counter()
            ans = mem.answer(
                q.text, k=K, namespace=q.namespace, max_new_tokens=reader.max_new_tokens, **opts
            )
            ms = 1000 * (time.perf_counter() - start)
            keys = [h.metadata.get("key", "") for r in ans.rounds for h in r.memories]
            out.append(grade(q, ans.text, ms, ans.prompt_tokens, False, keys))
    finally:
        mem.close()
    return out


def run_stage(
    task: Task,
    rankings: Rankings,
    reader: Reader,
    space: Path | None,
    per_split: int,
    log: Callable[[str], None] = print,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Score rows (per system, split and kind) and per-question outputs of one task."""
    stage = task.stages[-1]
    qs = pick(stage.queries, per_split)
    if not qs:
        return [], []
    memories = {m.key: m for m in stage.memories}
    outputs: dict[str, list[dict[str, Any]]] = {}
    if space is not None and not _is_space(space):
        log(f"  {task.name} answers: no msa-agent space at {space}; msa-agent rows skipped")
        space = None
    if space is not None:
        for row, opts in MSA_ROWS.items():
            subset = [q for q in qs if q.hops > 1] if opts.get(MULTIHOP) else qs
            if subset:
                kwargs = {k: v for k, v in opts.items() if k != MULTIHOP}
                outputs[row] = msa_outputs(reader, subset, space, kwargs)
    for row, recall_row in RAG_ROWS.items():
        if recall_row in rankings:
            outputs[row] = rag_outputs(reader, qs, rankings[recall_row], memories)
    outputs[FULL] = full_outputs(reader, qs, memories)
    outputs[NONE] = none_outputs(reader, qs)
    where = {"task": task.name, "stage": stage.label}
    rows, records = [], []
    for row, outs in outputs.items():
        scored = metrics.score_answers(outs)
        rows += [{**where, "system": row, **r} for r in scored]
        records += [{**where, "system": row, **o} for o in outs]
        for r in (r for r in scored if r["kind"] == "all"):
            log(
                f"  {task.name} answers {row} ({r['split']}): accuracy {_f(r['accuracy'])}, "
                f"F1 {_f(r['f1'])}, skipped {r['skipped']}, p50 {_f(r['p50_ms'], 0)} ms"
            )
    return rows, records


def _is_space(path: Path) -> bool:
    from msa_agent import Memory

    return Memory.exists(path)


def _f(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def add_to(
    doc: dict[str, Any],
    task: Task,
    rankings: Rankings,
    space: Path | None,
    per_split: int,
    log: Callable[[str], None] = print,
) -> None:
    """Run the answer stage of ``task`` with the default reader (loaded once) into ``doc``."""
    from msa_agent.bench.answers import default_reader

    reader = default_reader()
    doc["answer_settings"] = {**reader.settings(), "k": K, "questions_per_split": per_split}
    rows, outputs = run_stage(task, rankings, reader, space, per_split, log)
    doc["answers"] += rows
    doc["answer_outputs"] += outputs
