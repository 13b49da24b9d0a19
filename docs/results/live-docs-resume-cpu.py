"""Cost of one training step's document forward with a document adapter (``LiveDocs``).

    python docs/results/live-docs-resume-cpu.py docs/results/live-docs-resume-cpu.json

64 Wikipedia summaries (the benchmark's bank), the embedded SmolLM2-135M-Instruct, 2-core
CPU: the chunk means of a whole adapted forward, batched by length (what each step cost
before) against
``LiveDocs.states`` once the documents' base forward below the adapter is kept (what each
later step costs), for adapters on layers 8-28 and 22-28; forward only, best of 3.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import torch

from msa_agent.bench.tasks import build
from msa_agent.model.encoder import Encoder, batch_chunk_mean, length_batches
from msa_agent.model.loader import load_model
from msa_agent.model.query_adapter import QueryAdapter
from msa_agent.model.shape import ModelShape, resolve_msa_layers
from msa_agent.model.text import query_ids
from msa_agent.train.live import LiveDocs


def best_of(n: int, fn) -> float:  # noqa: ANN001
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def whole_forward(enc: Encoder, ids: list[list[int]], adapter: QueryAdapter) -> None:
    """What ``LiveDocs.states`` did before: an adapted forward from layer 0, batched by
    length, then chunk means."""
    lengths = [len(x) for x in ids]
    for part in length_batches(lengths, enc.batch_tokens):
        h = enc.hidden_batch([ids[j] for j in part], adapter)
        batch_chunk_mean(h, [lengths[j] for j in part], enc.chunk_size)


def measure(enc: Encoder, ids: list[list[int]], first: int) -> dict:
    adapter = QueryAdapter.for_model(enc.lm.model, range(first, 29), rank=8)
    live = LiveDocs(enc, [[x] for x in ids], adapter)
    kept = best_of(1, lambda: live.states(range(len(ids))))  # first step: keeps the base
    whole = best_of(3, lambda: whole_forward(enc, ids, adapter))
    resumed = best_of(3, lambda: live.states(range(len(ids))))
    row = {"adapter_layers": f"{first}-28", "whole_forward_s": round(whole, 3),
           "first_step_s": round(kept, 3), "resumed_s": round(resumed, 3),
           "speedup": round(whole / resumed, 2)}
    print(row, flush=True)
    return row


def main(out: Path) -> None:
    lm = load_model(None)
    layers = resolve_msa_layers(ModelShape.of(lm.model), None)
    texts = [m.text for m in build("wiki", "full").stages[-1].memories][:64]
    ids = [query_ids(lm.tokenizer, t, 512) for t in texts]
    enc = Encoder(lm, layers)
    with torch.no_grad():
        rows = [measure(enc, ids, first) for first in (8, 22)]
    out.write_text(json.dumps({
        "command": f"python docs/results/live-docs-resume-cpu.py {out}",
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "threads": torch.get_num_threads(), "torch": torch.__version__},
        "docs": len(ids), "tokens": sum(map(len, ids)), "rows": rows}, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
