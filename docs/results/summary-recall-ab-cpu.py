"""Recall latency with the summary channel: the question's two readings in one packed
forward (the runtime) against two forwards (the encoder's two methods apart), and against a
recall without the channel; interleaved per question in one process.

    python docs/results/summary-recall-ab-cpu.py SPACE OUT.json [N]

SPACE: a space built with ``summary_layer=-1`` (the bench's Wikipedia val space, ``python -m
msa_agent.bench.summary_channel --tasks wiki --split val --layer -1 --work WORK``). N val
questions (default 40), twice each, every one a new text (no kept summary vector); hybrid,
k = 5. "apart" swaps ``Encoder.queries_and_summaries`` for the two forwards it replaces.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from pathlib import Path

from msa_agent import Memory
from msa_agent.bench.summary_channel import split_queries
from msa_agent.bench.tasks import build
from msa_agent.model import encoder
from msa_agent.model.loader import load_model

PACKED = encoder.Encoder.queries_and_summaries


def apart(self, queries, summaries, layer):  # noqa: ANN001, ANN201
    return self.query_vectors_many(queries), self.last_states(summaries, layer)


def timed(mem: Memory, text: str) -> float:
    t0 = time.perf_counter()
    mem.recall(text, k=5)
    return (time.perf_counter() - t0) * 1e3


def main(space: Path, out: Path, n: int) -> None:
    lm = load_model(None)
    texts = [q.text for q in split_queries(build("wiki", "full"), "val")][:n]
    ms: dict[str, list[float]] = {"one packed forward": [], "two forwards": [],
                                  "without the channel": []}
    with (Memory.open(space, lm, read_only=True) as mem,
          Memory.open(space, lm, read_only=True, summary_weight=0) as off):
        for rep in range(3):  # the first round warms up and is not counted
            for text in texts:
                text = f"{text} {rep}"
                for name, impl in (("one packed forward", PACKED), ("two forwards", apart)):
                    encoder.Encoder.queries_and_summaries = impl
                    took = timed(mem, text)
                    if rep:
                        ms[name].append(took)
                took = timed(off, text)
                if rep:
                    ms["without the channel"].append(took)
        encoder.Encoder.queries_and_summaries = PACKED
    p50 = {k: statistics.median(v) for k, v in ms.items()}
    base = p50["without the channel"]
    report = {"machine": platform.processor() or platform.machine(), "space": str(space),
              "recalls_each": len(ms["without the channel"]), "p50_ms": p50,
              "x_without": {k: v / base for k, v in p50.items()}}
    print(json.dumps(report, indent=1))
    out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 40)
