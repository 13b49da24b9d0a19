"""Answering benchmark: MSA answer() vs MiniLM RAG vs no memory, single- and two-hop.

    python -m msa_agent.bench.answer --chains 100 --wiki 300 --out bench-out/answer.json

Memory: ``2 * chains`` generated fact documents plus ``wiki`` Wikipedia summaries. Accuracy is
the rate at which the exact answer string appears in the generated text. Also reports the
rate at which both documents of a two-hop chain are in the top-5 of recall, hops=1 vs auto,
and the single-hop gold document's top-5 rate. Then (``--adapt-steps``) the shipped router is
adapted to the space's own texts (self-supervised; the questions are never seen) and the MSA
rows run again.
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


def build_memory(path: Path, docs: Sequence[str], **config: Any):  # noqa: ANN201
    from msa_agent import Memory

    shutil.rmtree(path, ignore_errors=True)
    mem = Memory.open(path, keep_full_kv=True, **config)
    ids: list[str] = []
    for s in range(0, len(docs), 64):
        ids += mem.remember_many(list(docs[s : s + 64]))
    return mem, {i: n for n, i in enumerate(ids)}


def read_minilm(mem: Any, retriever: MiniLM, ids: Sequence[str], k: int, read: str
                ) -> Callable[[Question], str]:
    """MiniLM's top-k read through ``mem``'s reading mode: reading compared at equal retrieval."""
    from msa_agent.runtime.answer import Reader
    from msa_agent.runtime.stream import AnswerStream, ReadOnce

    def ask(q: Question) -> str:
        memories = [mem._engine.get(ids[i]) for i in retriever.search(q.text, k)]
        reader = Reader(mem._engine, q.text, memories, read)
        return AnswerStream(mem._engine, ReadOnce(mem._engine, reader, [], 32), {}).collect().text

    return ask


def rag_answer(mem: Any, retriever: MiniLM, docs: Sequence[str], k: int) -> Callable:
    from msa_agent.runtime.answer import prompt_ids, stop_ids
    from msa_agent.runtime.generate import greedy

    tok, model = mem._engine.tokenizer, mem._engine.lm.model

    def ask(q: Question) -> str:
        texts = [docs[i] for i in retriever.search(q.text, k)]
        out = greedy(model, prompt_ids(tok, q.text, texts), 32, stop_ids(model, tok))
        return tok.decode(list(out), skip_special_tokens=True)

    return ask


def adapt_router(mem: Any, space: Path, out: Path, steps: int) -> float:
    """Adapt the shipped router to the space's own texts (inverse cloze + entity-keyed
    questions; the benchmark's questions are never seen), switch the space to it; seconds."""
    from msa_agent.model.loader import model_fingerprint
    from msa_agent.model.router import Router, shipped_router
    from msa_agent.train import TrainConfig, memory_pairs, train_router

    start = time.perf_counter()
    lm, layers = mem._engine.lm, mem._engine.layers
    init = Router.load(shipped_router(model_fingerprint(lm), layers), model_fingerprint(lm))
    cfg = TrainConfig(steps=steps, batch_size=64, lr=1e-3, rank=64, hard_negatives=2)
    train_router(lm, memory_pairs(space, entities=4), out=out, init=init, config=cfg,
                 cache_root=out.parent / "cache")
    mem.reencode_routing(out)
    return time.perf_counter() - start


def msa_rows(mem: Any, qs: Sequence[Question], k: int, tag: str,
             modes: Sequence[tuple[Any, str]]) -> list[dict[str, Any]]:
    def ask(hops: Any, read: str) -> Callable[[Question], str]:
        return lambda q: mem.answer(q.text, k=k, hops=hops, read=read, max_new_tokens=32).text

    return [accuracy_row(f"MSA{tag} hops={h} read={r}", qs, ask(h, r)) for h, r in modes]


def chain_rates(mem: Any, pos: dict[str, int], qs: Sequence[Question], tag: str
                ) -> dict[str, float]:
    def recall(hops: Any) -> Callable[[str], list[int]]:
        return lambda text: [pos[h.id] for h in mem.recall(text, k=5, hops=hops)]

    return {f"MSA{tag} recall hops={h}": both_in_top5(recall(h), qs) for h in (1, "auto")}


SECTIONS = ("base", "adapt", "full_all")


def main(
    chains: int = 100, wiki: int = 300, questions: int = 60, k: int = 5,
    out: Path = typer.Option(Path("bench-out/answer.json")),
    work: Path = typer.Option(Path("bench-out/spaces/answer")),
    adapt_steps: int = typer.Option(600, help="Router adaptation steps."),
    only: str = typer.Option(",".join(SECTIONS), help="Sections: base, adapt, full_all."),
) -> None:
    """base: baselines and MSA rows (shipped router); adapt: the router adapted to the space,
    MSA rows again; full_all: a second space keeping full K/V of every layer, read='full'."""
    sections = only.split(",")
    facts: FactSet = fact_chains(chains)
    docs = facts.docs + [a.text for a in wiki_split().bank[:wiki]]
    qs = [q for q in facts.questions if q.hops == 1][:questions] + \
         [q for q in facts.questions if q.hops == 2][:questions]
    minilm, bm25 = MiniLM(docs), BM25(docs)
    modes = [(h, r) for h in (1, "auto") for r in ("text", "full")]
    rows: list[dict[str, Any]] = []
    chain: dict[str, float] = {}
    single: dict[str, float] = {}
    extra: dict[str, Any] = {}
    if "base" in sections or "adapt" in sections:
        mem, pos = build_memory(work, docs)
        if "base" in sections:
            rows += [accuracy_row("no memory", qs, lambda q: mem.answer(
                        q.text, namespace="-none-", max_new_tokens=32).text),
                     accuracy_row(f"RAG MiniLM top-{k} (text)", qs,
                                  rag_answer(mem, minilm, docs, k))]
            rows += msa_rows(mem, qs, k, "", modes)
            chain |= chain_rates(mem, pos, qs, "")
            single["MSA"] = gold_in_top5(mem, pos, qs)
        if "adapt" in sections:
            extra["adapt_seconds"] = adapt_router(mem, work, out.parent / "adapted.safetensors",
                                                  adapt_steps)
            rows += msa_rows(mem, qs, k, " adapted", modes[:3])  # not "auto" + "full": time
            chain |= chain_rates(mem, pos, qs, " adapted")
            single["MSA adapted"] = gold_in_top5(mem, pos, qs)
        mem.close()
    if "full_all" in sections:
        mem, pos = build_memory(work.with_name(work.name + "-all"), docs, full_kv_layers="all")
        rows += msa_rows(mem, qs, k, " full K/V in all layers", [(1, "full"), ("auto", "full")])
        ids = sorted(pos, key=pos.__getitem__)
        for read in ("text", "full"):  # the same (good) retrieval, two ways of reading it
            rows.append(accuracy_row(f"MiniLM top-{k} read={read} (all layers)", qs,
                                     read_minilm(mem, minilm, ids, k, read)))
        mem.close()
    chain |= {"MiniLM": both_in_top5(lambda t: minilm.search(t, 5), qs),
              "BM25": both_in_top5(lambda t: bm25.search(t, 5), qs)}
    single |= {"MiniLM": _gold5(lambda t: minilm.search(t, 5), qs),
               "BM25": _gold5(lambda t: bm25.search(t, 5), qs)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "two_hop_both_in_top5": chain,
                               "single_hop_gold_in_top5": single, **extra}, indent=2))
    _print(rows, single, chain, extra)


def _print(rows: list[dict[str, Any]], single: dict[str, float], chain: dict[str, float],
           extra: dict[str, Any]) -> None:
    print("| Method | single-hop acc | two-hop acc | p50 s |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['single_hop']:.2f} | {r['two_hop']:.2f} | {r['p50_s']:.2f} |")
    print("\n| Retrieval | single-hop gold in top-5 |\n|---|---|")
    for name, rate in single.items():
        print(f"| {name} | {rate:.2f} |")
    print("\n| Two-hop: both memories in top-5 | rate |\n|---|---|")
    for name, rate in chain.items():
        print(f"| {name} | {rate:.2f} |")
    if "adapt_seconds" in extra:
        print(f"\nrouter adaptation: {extra['adapt_seconds']:.0f} s")


def gold_in_top5(mem: Any, pos: dict[str, int], qs: Sequence[Question]) -> float:
    return _gold5(lambda t: [pos[h.id] for h in mem.recall(t, k=5)], qs)


def _gold5(search: Callable[[str], list[int]], qs: Sequence[Question]) -> float:
    one = [q for q in qs if q.hops == 1]
    return sum(q.gold[0] in search(q.text)[:5] for q in one) / max(1, len(one))


if __name__ == "__main__":
    typer.run(main)
