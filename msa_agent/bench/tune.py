"""Choose hybrid recall's fusion settings on the suite's VALIDATION splits only.

    python -m msa_agent.bench.tune --tasks facts sessions wiki longmemeval \
        --out docs/results/fusion_val.json

Each task's memories are remembered once (through the public API, dated with ``at=`` by
``memory_time``: a task's own dates, else seconds apart in order) into a space under
``--work``. Each validation query's candidate pools (``recall(routing="msa"|"lexical",
k=50)``, what hybrid recall fuses) are read once and cached; every fusion setting is scored
from them with the runtime's own ``fuse``, with ``memory_time`` as creation times (spaces
cached before dates came from ``memory_time`` hold other dates; fusion reads no others).
Multi-hop rows run the real ``recall(hops=...)``. Test queries are run only with ``--split
test``, to report a choice made on val (in spaces of their own), never to make one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import typer

from msa_agent.bench import metrics
from msa_agent.bench.rescore import keys
from msa_agent.bench.systems import dedupe
from msa_agent.bench.tasks import Query, Task, build
from msa_agent.bench.tasks.base import MemoryItem, memory_time
from msa_agent.runtime.fusion import LEXICAL, MSA, Fusion, fuse
from msa_agent.runtime.fusion import completed as complete

K = 5
BOTH = (MSA, LEXICAL)


def _fusion(method: str, w: float, c: int = 60, recency: float = 0.0,
            within: float = 0.0, subject_max: int = 3, cover: float = 0.0,
            more_words: float = 0.0) -> Fusion:
    return Fusion(method, c, ((MSA, 1.0), (LEXICAL, w)), recency, within,
                  subject_max=subject_max, cover=cover, more_words_within=more_words)


GRID: list[tuple[str, Fusion, tuple[str, ...]]] = [
    ("msa alone", _fusion("rrf", 0.0), (MSA,)),
    ("lexical alone", _fusion("rrf", 1.0), (LEXICAL,)),
    *[(f"rrf w_lex={w} k={c}", _fusion("rrf", w, c), BOTH)
      for w in (1.0, 2.0, 4.0) for c in (10, 60)],
    *[(f"sum w_lex={w} recency={r}", _fusion("sum", w, 60, r), BOTH)
      for w in (1.0, 2.0, 4.0, 8.0) for r in (0.0, 0.05, 0.1, 0.2)],
    *[(f"sum w_lex=4.0 recency={r} newer_within={n}", _fusion("sum", 4.0, 60, r, n), BOTH)
      for r in (0.0, 0.1) for n in (0.05, 0.1, 0.2, 0.3, 0.5)],
    *[(f"sum w_lex=4.0 newer_within={n} subject_max={m}", _fusion("sum", 4.0, 60, 0.0, n, m),
       BOTH) for n in (0.3, 0.5, 0.7) for m in (0, 2, 3, 4)],
    *[(f"sum w_lex={w} newer_within=0.5 subject_max=2", _fusion("sum", w, 60, 0.0, 0.5, 2),
       BOTH) for w in (1.0, 2.0, 3.0, 6.0, 8.0)],
]

# The MSA channel completed with the lexical candidates' real routing scores.
COMPLETED_GRID: list[tuple[str, Fusion, tuple[str, ...]]] = [
    (f"completed sum w_lex={w} newer_within=0.5 subject_max=2",
     _fusion("sum", w, 60, 0.0, 0.5, 2), BOTH) for w in (1.0, 2.0, 3.0, 4.0, 6.0, 8.0)]
COMPLETED_GRID += [  # newer_within only between versions: the newer holds `cover` of the words
    (f"completed sum w_lex={w} newer_within=0.5 subject_max=2 cover={c}",
     _fusion("sum", w, 60, 0.0, 0.5, 2, c), BOTH) for w in (2.0, 4.0) for c in (0.5, 0.67, 1.0)]
COMPLETED_GRID += [  # a memory holding more of the question's words passes a near-tie
    (f"completed sum w_lex=2.0 newer_within=0.5 subject_max=2 cover=0.5 more_words={m}",
     _fusion("sum", 2.0, 60, 0.0, 0.5, 2, 0.5, m), BOTH) for m in (0.02, 0.05, 0.1, 0.2)]


def remember(task: Task, path: Path, lm: Any, namespaces: set[str],
             settings: dict[str, Any] | None = None) -> None:
    """Ingest the task's last stage once (only the validation queries' namespaces) into a
    space made with ``settings`` (``Memory.open`` keywords); a marker file says it is done."""
    from msa_agent import Memory

    if (path / ".ingested").exists():
        return
    items: Sequence[MemoryItem] = [m for m in task.stages[-1].memories
                                   if m.namespace in namespaces]
    with Memory.open(path, lm, **(settings or {})) as mem:
        remember_items(mem, items)
    (path / ".ingested").touch()


def remember_items(mem: Any, items: Sequence[MemoryItem], batch: int = 64) -> None:
    """Task memories into ``mem``, as the suite's msa system stores them: dated by
    ``memory_time``, keyed by the task's key, in batches."""
    for s in range(0, len(items), batch):
        mem.remember_many([{"text": m.text, "namespace": m.namespace, "kind": "session",
                            "metadata": {"key": m.key}, "at": memory_time(m)}
                           for m in items[s:s + batch]])


POOL = 50  # = MemoryConfig.fusion_pool: each channel's candidates, as the runtime fuses them


def channel_pools(path: Path, lm: Any, queries: Sequence[Query], task: Task,
                  split: str = "val") -> list[dict[str, Any]]:
    """Each query's MSA and lexical candidate pools (ids, scores) and keys, read once through
    ``recall(routing=...)`` and cached in ``path`` (``pools-{split}.json``); every fusion setting
    is then scored from them with the runtime's own :func:`~msa_agent.runtime.fusion.fuse`
    (no further forwards). Creation times come from :func:`memory_time` of each memory's
    task item, the dates ``remember`` gives them."""
    cache = path / f"pools-{split}.json"
    if not cache.exists():
        cache.write_text(json.dumps(_read_pools(path, lm, queries)))
    words = path / f"matched-{split}.json"
    if not words.exists():
        words.write_text(json.dumps(_read_matched(path, queries, json.loads(cache.read_text()))))
    when = {m.key: memory_time(m) for m in task.stages[-1].memories}
    deep = path / f"msa-completed-{split}.json"
    pools = json.loads(cache.read_text())
    if not deep.exists():
        deep.write_text(json.dumps(_read_completions(path, lm, queries, pools)))
    for p, matched, extra in zip(pools, json.loads(words.read_text()),
                                 json.loads(deep.read_text())):
        p["created"] = {i: when[k] for i, k in p["key"].items()}
        p["matched"] = matched
        p["msa_completed"] = extra
    return pools


def _read_completions(path: Path, lm: Any, queries: Sequence[Query],
                      pools: list[dict[str, Any]]) -> list[list[tuple[str, float]]]:
    """The MSA scores of lexical candidates outside the MSA pool (``RoutingIndex.explain``),
    for the "completed" rows: each fused candidate then has both channels' real scores."""
    from msa_agent import Memory

    with Memory.open(path, lm) as mem:
        engine = mem._engine
        return [engine.routing_scores([i for i, _ in p["pools"][LEXICAL]],
                                      {i for i, _ in p["pools"][MSA]}, engine.query(q.text))
                for q, p in zip(queries, pools)]


def _read_matched(path: Path, queries: Sequence[Query], pools: list[dict[str, Any]]
                  ) -> list[dict[str, list[str]]]:
    """The query words each pooled memory contains (``Space.matched_terms``), as hybrid
    recall reads them for its newer-first rule."""
    from msa_agent.store import Space

    with Space.open(path) as space:
        return [{i: sorted(w) for i, w in space.matched_terms(q.text, list(p["key"])).items()}
                for q, p in zip(queries, pools)]


def _read_pools(path: Path, lm: Any, queries: Sequence[Query]) -> list[dict[str, Any]]:
    from msa_agent import Memory

    out = []
    with Memory.open(path, lm) as mem:
        for q in queries:
            pools, key = {}, {}
            for channel in (MSA, LEXICAL):
                hits = mem.recall(q.text, k=POOL, namespace=q.namespace, routing=channel)
                pools[channel] = [(h.id, h.score) for h in hits]
                key |= {h.id: h.metadata["key"] for h in hits}
            out.append({"pools": pools, "key": key})
    return out


def fused_keys(pool: dict[str, Any], f: Fusion, channels: Sequence[str],
               completed: bool = False) -> list[str]:
    """Top-K keys under ``f``; ``completed``: the MSA channel also scores the lexical
    candidates outside its pool (their real scores, not the pool's floor)."""
    given = {c: pool["pools"][c] for c in channels}
    if completed and MSA in given:
        given[MSA] = complete(given[MSA], [tuple(x) for x in pool["msa_completed"]])
    ranked = fuse(given, pool["created"], f, pool["matched"])
    return dedupe([pool["key"][r.id] for r in ranked], K)


def score_setting(pools: list[dict[str, Any]], queries: Sequence[Query], f: Fusion,
                  channels: Sequence[str], completed: bool = False) -> dict[str, Any]:
    rankings = [fused_keys(p, f, channels, completed) for p in pools]
    return {"rows": metrics.score(queries, rankings)}


def multihop(path: Path, lm: Any, queries: Sequence[Query], overrides: dict[str, Any],
             hops: Any) -> dict[str, Any]:
    """Real ``recall(hops=...)`` rows (interleave cannot be replayed from pools)."""
    from msa_agent import Memory

    with Memory.open(path, lm, **overrides) as mem:
        rankings = [keys(mem, q.text, q.namespace, hops=hops) for q in queries]
    return {"rows": metrics.score(queries, rankings)}


def main(
    tasks: list[str] = typer.Option(["facts", "sessions", "wiki"], "--tasks"),
    mode: str = typer.Option("quick", help="Task size: quick or full."),
    size: list[str] = typer.Option([], help="Task builder overrides, [TASK.]NAME=INT (e.g. "
                                   "sessions.n_users=30; without TASK. for every task)."),
    work: Path = typer.Option(Path("bench-out/tune"), help="Spaces, reused between runs."),
    out: Path = typer.Option(Path("docs/results/fusion_val.json")),
    chunk_size: int = typer.Option(0, help="New spaces' chunk_size (0: the default)."),
    dtype: str = typer.Option("float32", help="The backbone's compute dtype (a space is "
                              "built in one; a non-default one names its folder)."),
    split: str = typer.Option("val", help="val to choose; test only to report a choice "
                              "(its spaces are folders of their own)."),
    router: Path | None = typer.Option(None, help="A router file for new spaces (default: "
                                       "the shipped one); its name names their folders."),
) -> None:
    from msa_agent.model.loader import load_model

    lm = load_model(None, dtype=dtype)
    command = "python -m msa_agent.bench.tune " + " ".join(f"--tasks {t}" for t in tasks)
    command += f" --mode {mode}" + "".join(f" --size {o}" for o in size)
    command += f" --chunk-size {chunk_size}" if chunk_size else ""
    command += f" --dtype {dtype}" if dtype != "float32" else ""
    command += f" --split {split}" if split != "val" else ""
    command += f" --router {router}" if router else ""
    settings: dict[str, Any] = {"chunk_size": chunk_size} if chunk_size else {}
    if router:
        settings["router_path"] = str(router.resolve())
    report: dict[str, Any] = {"command": command, "k": K, "pool": POOL, "results": []}
    for name in tasks:
        sizes = _sizes(size, name)
        task = build(name, mode, **sizes)
        val = [q for q in task.stages[-1].queries if q.split == split]
        path = work / "-".join([name, mode, *(f"{k}={v}" for k, v in sizes.items()),
                                *([dtype] if dtype != "float32" else []),
                                *([split] if split != "val" else []),
                                *([router.stem] if router else [])])
        remember(task, path, lm, {q.namespace for q in val}, settings)
        pools = channel_pools(path, lm, val, task, split)
        for row, f, channels in GRID:
            _log(report, name, row, asdict(f), score_setting(pools, val, f, channels))
        for row, f, channels in COMPLETED_GRID:
            _log(report, name, row, {**asdict(f), "completed": True},
                 score_setting(pools, val, f, channels, completed=True))
        hop_q = [q for q in val if q.hops > 1]
        for hops in ((1, "auto") if hop_q else ()):
            _log(report, name, f"hybrid hops={hops} (multi-hop only)", {},
                 multihop(path, lm, hop_q, {}, hops))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str))


def _sizes(overrides: Sequence[str], task: str) -> dict[str, int]:
    """``task``'s builder overrides from ``[TASK.]NAME=INT`` options."""
    out = {}
    for option in overrides:
        name, value = option.split("=")
        scope, _, name = name.rpartition(".")
        if scope in ("", task):
            out[name] = int(value)
    return out


def _log(report: dict[str, Any], task: str, row: str, setting: dict[str, Any],
         res: dict[str, Any]) -> None:
    report["results"].append({"task": task, "row": row, "setting": setting, **res})
    total = next(r for r in res["rows"] if r["kind"] == "all")
    print(f"{task:12s} {row:40s} R@1 {total['r1']:.3f} R@5 {total['r5']:.3f} "
          f"newest {total.get('newest_first', float('nan')):.3f} n={total['n']}", flush=True)


if __name__ == "__main__":
    typer.run(main)
