"""Answering benchmark: MSA answer() vs MiniLM RAG vs no memory, single- and two-hop.

    python -m msa_agent.bench.answer --chains 100 --wiki 300 --out bench-out/answer.json

Memory: ``2 * chains`` generated fact documents plus ``wiki`` Wikipedia summaries. Accuracy is
the rate at which the exact answer string appears in the generated text. Also reports the
rate at which both documents of a two-hop chain are in the top-5 of recall, hops=1 vs auto.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import typer

from msa_agent.bench.baselines import BM25, MiniLM
from msa_agent.bench.facts import FactSet, Question, fact_chains
from msa_agent.bench.wiki import wiki_split


def accuracy_row(name: str, questions: Sequence[Question],
                 ask: Callable[[Question], str]) -> dict[str, Any]:
    correct: dict[int, list[bool]] = {1: [], 2: []}
    lat = []
    for q in questions:
        start = time.perf_counter()
        text = ask(q)
        lat.append(time.perf_counter() - start)
        correct[q.hops].append(q.answer.lower() in text.lower())
    rate = {h: sum(v) / max(1, len(v)) for h, v in correct.items()}
    return {"method": name, "single_hop": rate[1], "two_hop": rate[2],
            "p50_s": statistics.median(lat)}


def both_in_top5(search: Callable[[str], list[int]], questions: Sequence[Question]) -> float:
    two = [q for q in questions if q.hops == 2]
    return sum(set(q.gold) <= set(search(q.text)[:5]) for q in two) / max(1, len(two))


def build_memory(path: Path, docs: Sequence[str]):  # noqa: ANN201
    from msa_agent import Memory

    shutil.rmtree(path, ignore_errors=True)
    mem = Memory.open(path, keep_full_kv=True)
    ids: list[str] = []
    for s in range(0, len(docs), 64):
        ids += mem.remember_many(list(docs[s : s + 64]))
    return mem, {i: n for n, i in enumerate(ids)}


def rag_answer(mem: Any, retriever: MiniLM, docs: Sequence[str], k: int) -> Callable:
    from msa_agent.runtime.answer import prompt_ids, stop_ids
    from msa_agent.runtime.generate import greedy

    tok, model = mem._engine.tokenizer, mem._engine.lm.model

    def ask(q: Question) -> str:
        texts = [docs[i] for i in retriever.search(q.text, k)]
        out = greedy(model, prompt_ids(tok, q.text, texts), 32, stop_ids(model, tok))
        return tok.decode(list(out), skip_special_tokens=True)

    return ask


def main(
    chains: int = 100, wiki: int = 300, questions: int = 60, k: int = 5,
    out: Path = typer.Option(Path("bench-out/answer.json")),
    work: Path = typer.Option(Path("bench-out/spaces/answer")),
) -> None:
    facts: FactSet = fact_chains(chains)
    docs = facts.docs + [a.text for a in wiki_split().bank[:wiki]]
    qs = [q for q in facts.questions if q.hops == 1][:questions] + \
         [q for q in facts.questions if q.hops == 2][:questions]
    mem, pos = build_memory(work, docs)
    minilm, bm25 = MiniLM(docs), BM25(docs)

    def msa(hops: Any, read: str) -> Callable[[Question], str]:
        return lambda q: mem.answer(q.text, k=k, hops=hops, read=read, max_new_tokens=32).text

    rows = [accuracy_row("no memory", qs, lambda q: mem.answer(
                q.text, namespace="-none-", max_new_tokens=32).text),
            accuracy_row(f"RAG MiniLM top-{k} (text)", qs, rag_answer(mem, minilm, docs, k))]
    for hops in (1, "auto"):
        for read in ("text", "full"):
            rows.append(accuracy_row(f"MSA hops={hops} read={read}", qs, msa(hops, read)))

    def recall(hops: Any) -> Callable[[str], list[int]]:
        return lambda text: [pos[h.id] for h in mem.recall(text, k=5, hops=hops)]

    chain = {"MSA recall hops=1": both_in_top5(recall(1), qs),
             "MSA recall hops=auto": both_in_top5(recall("auto"), qs),
             "MiniLM": both_in_top5(lambda t: minilm.search(t, 5), qs),
             "BM25": both_in_top5(lambda t: bm25.search(t, 5), qs)}
    mem.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "two_hop_both_in_top5": chain}, indent=2))
    print("| Method | single-hop acc | two-hop acc | p50 s |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['single_hop']:.2f} | {r['two_hop']:.2f} | {r['p50_s']:.2f} |")
    print("\n| Two-hop: both memories in top-5 | rate |\n|---|---|")
    for name, rate in chain.items():
        print(f"| {name} | {rate:.2f} |")


if __name__ == "__main__":
    typer.run(main)
