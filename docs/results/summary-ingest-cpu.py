"""Ingest and recall cost of the summary channel (``summary_layer``; issue 12's bound on
ingest: >= 0.8x today's tokens/s).

    python docs/results/summary-ingest-cpu.py OUT.json [TASK]

A space without summaries and one with ``summary_layer=-1`` each ingest the same 200
memories of TASK (default wiki) into a new space, alternating, three rounds; tokens/s of
``remember_many`` (the embedded SmolLM2-135M-Instruct, 2-core CPU). Then 50 of the task's
questions are recalled from each (hybrid, k=5), p50 latency; and the bytes on disk.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from msa_agent import Memory
from msa_agent.bench.tasks import build
from msa_agent.model.loader import load_model

SETTINGS = {"without": {}, "summary_layer=-1": {"summary_layer": -1}}


def main(out: Path, task: str) -> None:
    lm = load_model(None)
    stage = build(task, "full").stages[-1]
    texts = [m.text for m in stage.memories][:200]
    questions = [q.text for q in stage.queries if q.split == "val"][:50]
    tokens = sum(len(lm.tokenizer(t)["input_ids"]) for t in texts)
    rates: dict[str, list[float]] = {k: [] for k in SETTINGS}
    recall_ms: dict[str, float] = {}
    size: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(3):
            for name, kw in SETTINGS.items():
                with Memory.open(Path(tmp) / f"{name}-{r}", lm, **kw) as mem:
                    t0 = time.perf_counter()
                    for s in range(0, len(texts), 64):
                        mem.remember_many(texts[s:s + 64])
                    rates[name].append(tokens / (time.perf_counter() - t0))
                    if r == 2:
                        mem.recall(questions[0], k=5)  # warm
                        ms = []
                        for q in questions:
                            t0 = time.perf_counter()
                            mem.recall(q, k=5)
                            ms.append((time.perf_counter() - t0) * 1e3)
                        recall_ms[name] = statistics.median(ms)
                        size[name] = mem.stats().bytes_on_disk
    best = {k: max(v) for k, v in rates.items()}
    report = {"machine": platform.processor() or platform.machine(), "task": task,
              "memories": len(texts), "tokens": tokens, "tokens_per_s": rates,
              "best_tokens_per_s": best,
              "ratio": best["summary_layer=-1"] / best["without"],
              "recall_p50_ms": recall_ms, "bytes_on_disk": size}
    print(json.dumps(report, indent=1))
    out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "wiki")
