"""Recall benchmark: MSA routing vs BM25 vs all-MiniLM-L6-v2 on the Wikipedia task.

    python -m msa_agent.bench.recall --out bench-out/recall.json [--routing own_qk learned]

Prints one markdown table (recall@1, recall@5, ingest tokens/s, recall p50/p95 ms).
"""

from __future__ import annotations

import json
import platform
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import typer

from msa_agent.bench.baselines import BM25, MiniLM
from msa_agent.bench.wiki import Article, WikiSplit, wiki_split


def rank_metrics(ranked_titles: Sequence[list[str]], gold: Sequence[str],
                 latencies: Sequence[float]) -> dict[str, float]:
    """Recall@1/@5 of the gold title, and latency percentiles in ms."""
    r1 = sum(g in r[:1] for r, g in zip(ranked_titles, gold)) / len(gold)
    r5 = sum(g in r[:5] for r, g in zip(ranked_titles, gold)) / len(gold)
    lat = sorted(latencies)
    p95 = lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))]
    return {"r1": r1, "r5": r5, "p50_ms": 1000 * statistics.median(lat), "p95_ms": 1000 * p95}


def timed_queries(search: Callable[[str], list[str]], questions: Sequence[Article]
                  ) -> tuple[list[list[str]], list[float]]:
    out, lat = [], []
    for q in questions:
        start = time.perf_counter()
        out.append(search(q.description))
        lat.append(time.perf_counter() - start)
    return out, lat


def run_msa(split: WikiSplit, routing: str, combines: Sequence[str], work: Path,
            batch: int = 64) -> list[dict[str, Any]]:
    """Ingest the bank into a fresh space, then query with each layer-combine rule."""
    from msa_agent import Memory

    path = work / f"wiki-{routing}"
    shutil.rmtree(path, ignore_errors=True)
    rows = []
    with Memory.open(path, routing=routing) as mem:
        start = time.perf_counter()
        for s in range(0, len(split.bank), batch):
            mem.remember_many([{"text": a.text, "metadata": {"title": a.title}}
                               for a in split.bank[s : s + batch]])
        seconds = time.perf_counter() - start
        tokens = mem.stats().tokens
        for combine in combines:
            mem.config.layer_combine = combine  # type: ignore[assignment]

            def search(q: str) -> list[str]:
                return [h.metadata["title"] for h in mem.recall(q, k=5)]

            ranked, lat = timed_queries(search, split.questions)
            rows.append({"method": f"MSA {routing} ({combine})",
                         **rank_metrics(ranked, [a.title for a in split.questions], lat),
                         "ingest_tok_s": tokens / seconds, "ingest_s": seconds})
    return rows


def run_baseline(name: str, split: WikiSplit) -> dict[str, Any]:
    docs = [a.text for a in split.bank]
    start = time.perf_counter()
    engine = BM25(docs) if name == "BM25" else MiniLM(docs)
    seconds = time.perf_counter() - start
    titles = [a.title for a in split.bank]

    def search(q: str) -> list[str]:
        return [titles[i] for i in engine.search(q, 5)]

    ranked, lat = timed_queries(search, split.questions)
    return {"method": name, **rank_metrics(ranked, [a.title for a in split.questions], lat),
            "ingest_s": seconds}


def table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| Routing | R@1 | R@5 | ingest tok/s | ingest s | p50 ms | p95 ms |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        tok = f"{r['ingest_tok_s']:.0f}" if "ingest_tok_s" in r else "-"
        lines.append(f"| {r['method']} | {r['r1']:.3f} | {r['r5']:.3f} | {tok} | "
                     f"{r['ingest_s']:.1f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} |")
    return "\n".join(lines)


def main(
    out: Path = typer.Option(Path("bench-out/recall.json"), help="Where to write the rows."),
    routing: list[str] = typer.Option(["own_qk"], help="MSA routing modes to run."),
    combine: list[str] = typer.Option(["heads", "mean", "max"], help="Layer-combine rules."),
    baselines: bool = typer.Option(True, help="Also run BM25 and MiniLM."),
    n_bank: int = 2000,
    n_questions: int = 200,
    work: Path = typer.Option(Path("bench-out/spaces"), help="Scratch folder for spaces."),
) -> None:
    split = wiki_split(n_bank, n_questions)
    rows: list[dict[str, Any]] = []
    if baselines:
        rows += [run_baseline("BM25", split), run_baseline("all-MiniLM-L6-v2", split)]
    for mode in routing:
        rows += run_msa(split, mode, combine, work)
    out.parent.mkdir(parents=True, exist_ok=True)
    info = {"machine": platform.processor() or platform.machine(), "bank": len(split.bank),
            "questions": len(split.questions), "rows": rows}
    out.write_text(json.dumps(info, indent=2))
    print(table(rows))


if __name__ == "__main__":
    typer.run(main)
