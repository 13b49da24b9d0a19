"""Appending to the resident routing index: in place (``GrowableRows``) against ``torch.cat``.

    python -m msa_agent.bench.index_append --rows 200000 --appends 200 \
        --out docs/results/index-append-cpu.json

An index already holding ``rows`` chunk rows of SmolLM2-135M's routing-key shape (15 layers,
3 KV heads, 64 dims; fp32) takes ``appends`` memories of 8 chunks each, one ``add`` per
memory, as ``remember`` does. Side by side in one run: the runtime's ``RoutingIndex.add``
(rows appended into spare capacity) and the previous rule, rebuilding the key tensor with
``torch.cat`` on every append (every resident row copied). Random unit keys, no model.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch
import typer

from msa_agent.runtime.routing import RoutingIndex

SHAPE = (15, 3, 64)
CHUNKS = 8  # chunks per appended memory (a 512-token text at P = 64)


def _timed(fn, n: int) -> list[float]:  # noqa: ANN001 - a zero-argument callable
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _ms(secs: list[float]) -> dict[str, float]:
    return {"p50": 1e3 * statistics.median(secs), "mean": 1e3 * statistics.mean(secs),
            "max": 1e3 * max(secs)}


def main(rows: int = 200_000, appends: int = 200, out: Path | None = None) -> None:
    torch.manual_seed(0)
    base = torch.randn(rows, *SHAPE)
    new = torch.randn(CHUNKS, *SHAPE)
    index = RoutingIndex("cpu", use_kernel=False)
    index.add(["base"], ["ns"], [base])
    count = iter(range(10**9))
    ours = _timed(lambda: index.add([f"m{next(count)}"], ["ns"], [new]), appends)
    keys = index.keys.clone()
    cat_keys = [keys]

    def cat_append() -> None:  # the previous rule: a new tensor holding every row
        cat_keys[0] = torch.cat([cat_keys[0], new])

    baseline = _timed(cat_append, appends)
    report = {"rows": rows, "appends": appends, "chunks_per_append": CHUNKS,
              "key_bytes": rows * 4 * 15 * 3 * 64, "torch": torch.__version__,
              "threads": torch.get_num_threads(),
              "in_place_ms": _ms(ours), "cat_ms": _ms(baseline)}
    print(json.dumps(report, indent=1))
    if out is not None:
        out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    typer.run(main)
