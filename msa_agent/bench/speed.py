"""Ingest and recall speed on this machine: batched vs one-by-one writes, recall latency.

    python -m msa_agent.bench.speed --docs 128 --queries 100

Uses the Wikipedia bank's first ``docs`` summaries and the description questions. Run it on a
quiet machine: it reports wall-clock times.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import typer

from msa_agent.bench.wiki import wiki_split


def ingest(texts: list[str], batch: int, **opts: Any) -> tuple[float, int]:
    """Seconds and tokens to remember ``texts`` in batches of ``batch`` (fresh space made
    with ``opts``, ``Memory.open`` settings)."""
    from msa_agent import Memory

    folder = Path(tempfile.mkdtemp(prefix="msa-speed-"))
    try:
        with Memory.open(folder / "m", **opts) as mem:
            start = time.perf_counter()
            for s in range(0, len(texts), batch):
                mem.remember_many(texts[s : s + batch])
            return time.perf_counter() - start, mem.stats().tokens
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def recall_latency(texts: list[str], queries: list[str], modes: Sequence[str] = ("hybrid",),
                   space: Path | None = None, router_path: str | None = None,
                   **opts: Any) -> tuple[dict[str, list[float]], float, int]:
    """Per routing mode, each query's recall seconds over ``texts`` remembered in batches of
    64 (a fresh space, or ``space`` reused when it already holds them: ingest seconds 0);
    also the ingest seconds and tokens. ``router_path``: route with that router (a reused
    space is re-encoded with it first); ``opts``: other ``Memory.open`` settings."""
    from msa_agent import Memory

    folder = Path(tempfile.mkdtemp(prefix="msa-speed-")) if space is None else space
    opts = {**opts, "router_path": router_path} if router_path else opts
    try:
        with Memory.open(folder / "m", **opts) as mem:
            copy = mem._engine.encoder.query_dtype  # noqa: SLF001 - what "auto" chose
            print(f"compute dtype: {mem.config.dtype}; routing queries from "
                  f"{'the backbone' if copy is None else f'a {copy} copy'} "
                  f"(routing_query_dtype={mem.config.routing_query_dtype})")
            secs = _fill(mem, texts, folder)
            toks, out = mem.stats().tokens, {}
            for mode in modes:
                out[mode] = _time_recall(mem, queries, mode)
            return out, secs, toks
    finally:
        if space is None:
            shutil.rmtree(folder, ignore_errors=True)


def _fill(mem: Any, texts: list[str], folder: Path) -> float:
    """Remember ``texts`` in batches of 64 unless ``folder`` says it holds them; seconds."""
    marker = folder / f".holds-{len(texts)}"
    if marker.exists():
        return 0.0
    start = time.perf_counter()
    for s in range(0, len(texts), 64):
        mem.remember_many(texts[s : s + 64])
    marker.touch()
    return time.perf_counter() - start


def throughput(space: Path, queries: list[str], modes: Sequence[str], batch: int,
               **opts: Any) -> dict[str, tuple[float, float]]:
    """Per mode, queries per second one by one (``recall``) and in batches of ``batch``
    (``recall_many``), over the space reused at ``space`` (as ``recall_latency`` left it)."""
    from msa_agent import Memory

    out = {}
    with Memory.open(space / "m", **opts) as mem:
        for mode in modes:
            mem.recall_many(queries[:batch], k=5, routing=mode)  # warm-up
            start = time.perf_counter()
            for q in queries:
                mem.recall(q, k=5, routing=mode)
            alone = len(queries) / (time.perf_counter() - start)
            start = time.perf_counter()
            for s in range(0, len(queries), batch):
                mem.recall_many(queries[s : s + batch], k=5, routing=mode)
            out[mode] = (alone, len(queries) / (time.perf_counter() - start))
    return out


def _time_recall(mem: Any, queries: list[str], mode: str) -> list[float]:
    mem.recall(queries[0], k=5, routing=mode)  # warm-up
    times = []
    for q in queries:
        start = time.perf_counter()
        mem.recall(q, k=5, routing=mode)
        times.append(time.perf_counter() - start)
    return times


def main(docs: int = 128, queries: int = 100, write_paths: bool = True,
         modes: list[str] = typer.Option(["hybrid", "msa", "lexical"], "--mode"),
         space: Path | None = typer.Option(None, help="Reuse this folder's space (kept)."),
         batch: int = typer.Option(0, help="Also compare recall_many in batches of this "
                                   "size with recall one by one (queries/s; needs --space)."),
         router_path: str | None = typer.Option(None, help="Route with this router file."),
         dtype: str | None = typer.Option(None, help="The backbone's compute dtype "
                                          "(default: MemoryConfig's)."),
         routing_query_dtype: str | None = typer.Option(
             None, help="MemoryConfig.routing_query_dtype (default: the config's)."),
         ) -> None:
    opts = {k: v for k, v in (("dtype", dtype), ("routing_query_dtype", routing_query_dtype))
            if v}
    split = wiki_split()
    texts = [a.text for a in split.bank[:docs]]
    qs = [a.description for a in split.questions[:queries]]
    print(f"torch threads: {torch.get_num_threads()}")
    if write_paths:
        print("| write path | docs | tokens | seconds | tokens/s |\n|---|---|---|---|---|")
        for batch in (1, 16, 64):
            secs, toks = ingest(texts, batch, **opts)
            print(f"| remember_many batch={batch} | {len(texts)} | {toks} | {secs:.1f} | "
                  f"{toks / secs:.0f} |")
    lat, secs, toks = recall_latency(texts, qs, modes, space, router_path, **opts)
    if secs:
        print(f"\ningest (batches of 64): {toks} tokens in {secs:.1f} s = {toks / secs:.0f} tok/s")
    for mode, values in lat.items():
        values = sorted(values)
        p95 = values[int(0.95 * (len(values) - 1))]
        print(f"recall k=5, routing={mode}, {len(texts)} memories, {len(values)} queries: "
              f"p50 {1000 * statistics.median(values):.1f} ms, p95 {1000 * p95:.1f} ms")
    if batch and space is not None:
        for mode, (alone, many) in throughput(space, qs, modes, batch, **opts).items():
            print(f"routing={mode}: recall one by one {alone:.1f} queries/s, recall_many "
                  f"batch={batch} {many:.1f} queries/s ({many / alone:.2f}x)")


if __name__ == "__main__":
    typer.run(main)
