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

import torch
import typer

from msa_agent.bench.wiki import wiki_split


def ingest(texts: list[str], batch: int) -> tuple[float, int]:
    """Seconds and tokens to remember ``texts`` in batches of ``batch`` (fresh space)."""
    from msa_agent import Memory

    folder = Path(tempfile.mkdtemp(prefix="msa-speed-"))
    try:
        with Memory.open(folder / "m") as mem:
            start = time.perf_counter()
            for s in range(0, len(texts), batch):
                mem.remember_many(texts[s : s + batch])
            return time.perf_counter() - start, mem.stats().tokens
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def recall_latency(texts: list[str], queries: list[str], modes: Sequence[str] = ("hybrid",)
                   ) -> tuple[dict[str, list[float]], float, int]:
    """Per routing mode, each query's recall seconds over ``texts`` remembered in batches of
    64 (fresh space); also the ingest seconds and tokens."""
    from msa_agent import Memory

    folder = Path(tempfile.mkdtemp(prefix="msa-speed-"))
    try:
        with Memory.open(folder / "m") as mem:
            start = time.perf_counter()
            for s in range(0, len(texts), 64):
                mem.remember_many(texts[s : s + 64])
            secs, toks = time.perf_counter() - start, mem.stats().tokens
            out: dict[str, list[float]] = {}
            for mode in modes:
                mem.recall(queries[0], k=5, routing=mode)  # warm-up
                out[mode] = []
                for q in queries:
                    start = time.perf_counter()
                    mem.recall(q, k=5, routing=mode)
                    out[mode].append(time.perf_counter() - start)
            return out, secs, toks
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(docs: int = 128, queries: int = 100, write_paths: bool = True,
         modes: list[str] = typer.Option(["hybrid", "msa", "lexical"], "--mode")) -> None:
    split = wiki_split()
    texts = [a.text for a in split.bank[:docs]]
    qs = [a.description for a in split.questions[:queries]]
    print(f"torch threads: {torch.get_num_threads()}")
    if write_paths:
        print("| write path | docs | tokens | seconds | tokens/s |\n|---|---|---|---|---|")
        for batch in (1, 16, 64):
            secs, toks = ingest(texts, batch)
            print(f"| remember_many batch={batch} | {len(texts)} | {toks} | {secs:.1f} | "
                  f"{toks / secs:.0f} |")
    lat, secs, toks = recall_latency(texts, qs, modes)
    print(f"\ningest (batches of 64): {toks} tokens in {secs:.1f} s = {toks / secs:.0f} tok/s")
    for mode, values in lat.items():
        values = sorted(values)
        p95 = values[int(0.95 * (len(values) - 1))]
        print(f"recall k=5, routing={mode}, {len(texts)} memories, {len(values)} queries: "
              f"p50 {1000 * statistics.median(values):.1f} ms, p95 {1000 * p95:.1f} ms")


if __name__ == "__main__":
    typer.run(main)
