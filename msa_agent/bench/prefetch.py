"""Prefetch of the next round's candidates (``MemoryConfig.prefetch``): round 2's read with
prefetch off and on, side by side, on K/V tiers smaller than the space.

    python -m msa_agent.bench.prefetch --out docs/results/prefetch-cpu.json

One space of ``--memories`` memories of about ``--tokens`` tokens each (consecutive essay
sentences, as :mod:`msa_agent.bench.ttft`; full K/V kept, the default chat frame), its host
tier sized to hold about ``--fit`` memories (``host_cache_mb``), so that reads miss. Each of
``--questions`` questions (about the sentences of one memory, spread over the space) is read
in two rounds, as a generative interleave reads each round's selection:

- round 1: ``Memory.answer(question, k, read=--read)``: routes, reads its k memories and
  generates ``--max-new-tokens`` tokens; with prefetch on, the next candidates load meanwhile;
- round 2: a read (``Reader``, the answer's own reader) of the memories that memory
  interleave's second round adds (``recall(question, hops=2)``'s round-2 hits, at most k:
  routed with the question and the bridge words of round 1's best memory, that one left
  out), routed once beforehand so that every setting reads the same.

Every setting (``--prefetch``, e.g. ``0,2,4``) has its own read-only open of the space
(its own cold tiers, reopened for each of ``--repeats`` passes) and the settings take each
question in turn, their order alternating (0, N then N, 0), so that a change in machine load
(a shared machine) falls on all of them; each question starts once every prefetch has
finished, so a worker overlaps only the answer that started it (its generation, and round 2
if still running). One untimed warm-up pass first.

Reported: round 2's read time (the K/V read, laid out and framed: what
``Answer.timings_ms["read_ms"]`` times) and tier hit rate (hits over reads of round 2 alone:
prefetch admits count no hit), the hit rate over both rounds, the prefetch counters and the
worker's time per question, round 1's whole answer time (the worker runs during its
generation: its cost shows there), and whether every setting answered and read alike (round
1's texts and memories, round 2's K/V checksums).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from msa_agent.bench.text import sentences
from msa_agent.bench.ttft import (
    TEXT_SOURCE,
    fill,
    load_average,
    machine,
    machine_name,
    memory_texts,
    open_options,
    resolve_device,
    save,
    token_counts,
)


def questions(texts: Sequence[str], n: int) -> list[str]:
    """One question per memory picked evenly over the space: its second sentence's first
    twelve words (the first may start mid-thought), as "What does the author say about"."""
    out = []
    for i in range(n):
        text = texts[(i * len(texts)) // n]
        said = sentences(text)
        words = (said[1] if len(said) > 1 else said[0]).split()[:12]
        out.append("What does the author say about: " + " ".join(words).rstrip(".,;:") + "?")
    return out


def second_rounds(mem: Any, asked: Sequence[str], k: int) -> list[list[str]]:
    """The ids memory interleave's round 2 adds for each question (at most ``k``)."""
    engine = mem._engine
    scope = mem._scope(None, None, alive=True)
    return [[h.memory.id for h in engine.recall(q, 2 * k, scope, hops=2) if h.round == 2][:k]
            for q in asked]


def tier(mem: Any, read: str) -> dict[str, float]:
    return dict(mem.stats().host_cache[read])


def one_question(mem: Any, question: str, ids: list[str],
                 args: argparse.Namespace) -> dict[str, Any]:
    """Round 1 (an answer) and round 2 (a read of ``ids``) of one question on ``mem``."""
    from msa_agent.runtime.answer import Reader

    engine = mem._engine
    before = tier(mem, args.read)
    started = time.perf_counter()
    ans = mem.answer(question, k=args.k, read=args.read, max_new_tokens=args.max_new_tokens)
    wall = 1000 * (time.perf_counter() - started)
    middle = tier(mem, args.read)
    row: dict[str, Any] = {
        "round1": {"wall_ms": wall, "read_ms": ans.timings_ms["read_ms"],
                   "generate_ms": ans.timings_ms["generate_ms"],
                   "hits": middle["hits"] - before["hits"],
                   "misses": middle["misses"] - before["misses"], "text": ans.text,
                   "memories": [h.id for r in ans.rounds for h in r.memories]},
        "prefetch_done_before_round2": engine.prefetcher.wait(0)}
    memories = [engine.get(i) for i in ids]
    started = time.perf_counter()
    with engine.lock:
        reader = Reader(engine, question, memories, args.read,
                        _per_layer(engine, memories) if args.read == "pooled" else None)
    sync()
    read_ms = 1000 * (time.perf_counter() - started)
    after = tier(mem, args.read)
    k_sum = sum(float(t.double().sum()) for t in (reader.memory.k.values()
                                                  if reader.memory else ()))
    row["round2"] = {"read_ms": read_ms, "hits": after["hits"] - middle["hits"],
                     "misses": after["misses"] - middle["misses"], "memories": ids,
                     "k_checksum": k_sum}
    return row


def one_repeat(path: Path, model: Any, device: str, settings: Sequence[int],
               plan: Sequence[tuple[str, list[str]]], args: argparse.Namespace,
               cache_mb: int, flip: bool) -> list[dict[str, Any]]:
    """Every question's two rounds in every setting, each setting on its own read-only open
    of the space (cold tiers), question by question, the settings' order alternating; no
    question starts while a prefetch still runs (a worker overlaps its own answer only)."""
    from msa_agent import Memory

    mems = {n: Memory.open(path, model=model, device=device, read_only=True,
                           host_cache_mb=cache_mb, gpu_cache_mb=args.gpu_cache_mb,
                           prefetch=n, **open_options(args.tokens)) for n in settings}
    rows: dict[int, list[dict[str, Any]]] = {n: [] for n in settings}
    try:
        for i, (question, ids) in enumerate(plan):
            for n in (settings if (i % 2 == 0) != flip else list(reversed(settings))):
                for other in mems.values():
                    other._engine.prefetcher.wait(60)
                rows[n].append(one_question(mems[n], question, ids, args))
        out = []
        for n, mem in mems.items():
            prefetcher = mem._engine.prefetcher
            prefetcher.wait(60)
            out.append({"prefetch": n, "rows": rows[n], "tiers_after": mem.stats().host_cache,
                        "prefetch_failed": prefetcher.failed,
                        "worker_ms": 1000 * prefetcher.busy_s})
        return out
    finally:
        for mem in mems.values():
            mem.close()


def _per_layer(engine: Any, memories: Sequence[Any]) -> dict[int, list[Any]]:
    """Every MSA layer reads all of round 2's memories (a pooled read of them)."""
    return {layer: list(memories) for layer in engine.layers}


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def summarise(passes: Sequence[dict[str, Any]], read: str) -> dict[str, Any]:
    """Per setting, over its passes: round 2's read time and hit rate, round 1's times."""
    out: dict[str, Any] = {}
    for n in sorted({p["prefetch"] for p in passes}):
        rows = [r for p in passes if p["prefetch"] == n for r in p["rows"]]
        r1, r2 = [r["round1"] for r in rows], [r["round2"] for r in rows]
        hits2, reads2 = sum(r["hits"] for r in r2), sum(r["hits"] + r["misses"] for r in r2)
        hits = hits2 + sum(r["hits"] for r in r1)
        reads = reads2 + sum(r["hits"] + r["misses"] for r in r1)
        tiers = [p["tiers_after"][read] for p in passes if p["prefetch"] == n]
        out[str(n)] = {
            "questions": len(rows),
            "round2_read_ms": _stats([r["read_ms"] for r in r2]),
            "round2_hit_rate": hits2 / reads2 if reads2 else 0.0,
            "hit_rate_both_rounds": hits / reads if reads else 0.0,
            "round1_wall_ms": _stats([r["wall_ms"] for r in r1]),
            "round1_read_ms": _stats([r["read_ms"] for r in r1]),
            "round1_generate_ms": _stats([r["generate_ms"] for r in r1]),
            "prefetch_issued": sum(t["prefetch_issued"] for t in tiers),
            "prefetch_used": sum(t["prefetch_used"] for t in tiers),
            "prefetch_wasted": sum(t["prefetch_wasted"] for t in tiers),
            "evictions": sum(t["evictions"] for t in tiers),
            "prefetch_done_before_round2": sum(r["prefetch_done_before_round2"] for r in rows),
            "worker_ms_per_question": sum(p["worker_ms"] for p in passes
                                          if p["prefetch"] == n) / len(rows),
            "prefetch_failed": sum(p["prefetch_failed"] for p in passes if p["prefetch"] == n)}
    return out


def _stats(values: Sequence[float]) -> dict[str, float]:
    return {"p50": statistics.median(values), "mean": statistics.fmean(values),
            "min": min(values)}


def same_answers(passes: Sequence[dict[str, Any]]) -> bool:
    """Every pass answered round 1 alike (texts, memories) and read round 2's K/V alike."""
    def key(p: dict[str, Any]) -> list[Any]:
        return [(r["round1"]["text"], r["round1"]["memories"], r["round2"]["k_checksum"])
                for r in p["rows"]]
    return all(key(p) == key(passes[0]) for p in passes)


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from msa_agent import Memory
    from msa_agent.model.loader import load_model

    device = resolve_device(args.device)
    lm = load_model(args.model, dtype=args.dtype, device=str(device))
    texts = memory_texts(lm.tokenizer, args.memories, args.tokens)
    path = work / "space"
    with Memory.open(path, model=lm, device=str(device), **open_options(args.tokens)) as mem:
        ingest_s = fill(mem, texts)
        space = mem._engine._space
        live = space.find(None)
        memory_bytes = sum(a.nbytes for x in ("k", "v")  # the read's K/V rows, per memory
                           for a in space.read(f"{args.read}_{x}", live)) / len(live)
        asked = questions(texts, args.questions)
        plan = list(zip(asked, second_rounds(mem, asked, args.k)))
    cache_mb = max(1, round(args.fit * memory_bytes / (1 << 20)))
    settings = [int(x) for x in args.prefetch.split(",")]
    doc: dict[str, Any] = {
        "what": "round 2 of a two-round answer: its K/V read with prefetch of the next "
                "candidates off and on, tiers smaller than the space",
        "machine": machine(device, args.commit) | {
            "command": "python -m msa_agent.bench.prefetch " + " ".join(sys.argv[1:])},
        "model": lm.name, "dtype": args.dtype,
        "settings": {"memories": args.memories, "tokens": args.tokens, "k": args.k,
                     "read": args.read, "questions": args.questions, "repeats": args.repeats,
                     "max_new_tokens": args.max_new_tokens, "prefetch": settings,
                     "host_cache_mb": cache_mb, "fit_memories": args.fit,
                     "kv_bytes_per_memory": memory_bytes, "gpu_cache_mb": args.gpu_cache_mb},
        "texts": {"source": TEXT_SOURCE, "tokens": token_counts(lm.tokenizer, texts)},
        "ingest_s": ingest_s, "plan": [{"question": q, "round2": ids} for q, ids in plan],
        "load_average_before": load_average()}
    one_repeat(path, lm, str(device), settings, plan[:2], args, cache_mb, False)  # warm-up
    passes = []
    for rep in range(args.repeats):
        passes += [p | {"repeat": rep} for p in
                   one_repeat(path, lm, str(device), settings, plan, args, cache_mb, rep % 2 == 1)]
    doc |= {"load_average_after": load_average(), "summary": summarise(passes, args.read),
            "same_answers": same_answers(passes), "passes": passes}
    return doc


def table(summary: dict[str, Any]) -> str:
    lines = ["| prefetch | round 2 read p50 / mean ms | round 2 hit rate | both rounds hit rate "
             "| issued / used / wasted | worker ms / question | round 1 answer p50 ms "
             "| round 1 generate p50 ms |", "|---|---|---|---|---|---|---|---|"]
    for n, s in summary.items():
        lines.append(
            f"| {n} | {s['round2_read_ms']['p50']:.1f} / {s['round2_read_ms']['mean']:.1f} "
            f"| {s['round2_hit_rate']:.2f} | {s['hit_rate_both_rounds']:.2f} "
            f"| {s['prefetch_issued']:.0f} / {s['prefetch_used']:.0f} / "
            f"{s['prefetch_wasted']:.0f} | {s['worker_ms_per_question']:.1f} "
            f"| {s['round1_wall_ms']['p50']:.0f} "
            f"| {s['round1_generate_ms']['p50']:.0f} |")
    return "\n".join(lines)


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m msa_agent.bench.prefetch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="HF id or path; default: the embedded model")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--memories", type=int, default=48)
    p.add_argument("--tokens", type=int, default=256, help="tokens per memory (about)")
    p.add_argument("--fit", type=float, default=8, help="memories the host tier holds")
    p.add_argument("--questions", type=int, default=24)
    p.add_argument("--k", type=int, default=2, help="memories each round reads")
    p.add_argument("--read", default="full", choices=("full", "pooled"))
    p.add_argument("--prefetch", default="0,2", help="comma list of settings (0 = off)")
    p.add_argument("--repeats", type=int, default=2, help="passes over every setting")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--gpu-cache-mb", type=int, default=None, help="CUDA: the GPU tier's size")
    p.add_argument("--out", type=Path, default=None, help="JSON result file")
    p.add_argument("--work", type=Path, default=None, help="where the space is built (temp)")
    p.add_argument("--commit", default=None, help="commit to record (a box without .git)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    with tempfile.TemporaryDirectory(prefix="prefetch-") as tmp:
        doc = run(args, args.work or Path(tmp))
    save(doc, args.out)
    s = doc["settings"]
    print(f"{machine_name(doc['machine'])}; {doc['model']}; {s['memories']} memories of "
          f"~{s['tokens']} tokens, "
          f"host tier {s['host_cache_mb']} MB (~{s['fit_memories']:g} memories), k = {s['k']}, "
          f"read = {s['read']}; same answers in every setting: {doc['same_answers']}\n")
    print(table(doc["summary"]))


if __name__ == "__main__":
    main()
