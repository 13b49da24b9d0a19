"""Ingest cost of a router with a document adapter (issue 12's bound: >= 0.8x today's tokens/s).

    python docs/results/doc-adapter-ingest-cpu.py docs/results/doc-adapter-ingest-cpu.json

The shipped router, and the same router plus a fresh document adapter of the measured shape
(LoRA rank 8 on layers 8-28; its cost does not depend on its values), each ingest the same
200 Wikipedia summaries into a new space, alternating, three rounds; tokens/s of
``remember_many`` (the embedded SmolLM2-135M-Instruct, 2-core CPU).
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from msa_agent import Memory
from msa_agent.bench.tasks import build
from msa_agent.model.loader import load_model, model_fingerprint
from msa_agent.model.query_adapter import QueryAdapter
from msa_agent.model.router import SHIPPED_DIR, Router
from msa_agent.train import TrainableRouter, save_router


def main(out: Path) -> None:
    lm = load_model(None)
    shipped = sorted(SHIPPED_DIR.glob("smollm2-135m-instruct.safetensors"))[0]
    texts = [m.text for m in build("wiki", "full").stages[-1].memories][:200]
    tokens = sum(len(lm.tokenizer(t)["input_ids"]) for t in texts)
    with tempfile.TemporaryDirectory() as tmp:
        tr = TrainableRouter.from_router(Router.load(shipped), rank=None)
        tr.doc_adapter = QueryAdapter.for_model(lm.model, range(8, 29), rank=8)
        doc = save_router(tr, Path(tmp) / "doc.safetensors", model_fingerprint(lm))
        rows = []
        for rnd in range(3):
            for name, path in (("shipped", shipped), ("shipped + document adapter", doc)):
                with Memory.open(Path(tmp) / f"{name[:7]}-{rnd}", lm,
                                 router_path=str(path)) as mem:
                    start = time.perf_counter()
                    mem.remember_many(texts)
                    s = time.perf_counter() - start
                rows.append({"round": rnd, "router": name, "seconds": round(s, 2),
                             "tokens_per_s": round(tokens / s, 1)})
                print(rows[-1], flush=True)
    best = {n: max(r["tokens_per_s"] for r in rows if r["router"] == n)
            for n in ("shipped", "shipped + document adapter")}
    out.write_text(json.dumps({
        "command": f"python docs/results/doc-adapter-ingest-cpu.py {out}",
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "threads": torch.get_num_threads(), "torch": torch.__version__},
        "texts": len(texts), "tokens": tokens, "rows": rows, "best_tokens_per_s": best,
        "ratio_best": round(best["shipped + document adapter"] / best["shipped"], 3)},
        indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
