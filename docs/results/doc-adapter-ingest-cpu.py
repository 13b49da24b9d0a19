"""Ingest cost of a router with a document adapter (issue 12's bound: >= 0.8x today's tokens/s).

    python docs/results/doc-adapter-ingest-cpu.py OUT.json [FIRST ...]

The shipped router without any document adapter ("shipped"), and that router plus a fresh document adapter of the measured shape (LoRA rank 8 on layers FIRST-28, default
8; its cost does not depend on its values), each ingest the same 200 Wikipedia summaries into
a new space, alternating, three rounds; tokens/s of ``remember_many`` (the embedded
SmolLM2-135M-Instruct, 2-core CPU). The adapted forward resumes at FIRST since the encoder
does (``docs/results/doc-adapter-ingest-cpu.json`` is the earlier whole second forward).
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


def main(out: Path, firsts: list[int]) -> None:
    lm = load_model(None)
    shipped = sorted(SHIPPED_DIR.glob("smollm2-135m-instruct.safetensors"))[0]
    texts = [m.text for m in build("wiki", "full").stages[-1].memories][:200]
    tokens = sum(len(lm.tokenizer(t)["input_ids"]) for t in texts)
    with tempfile.TemporaryDirectory() as tmp:
        tr = TrainableRouter.from_router(Router.load(shipped), rank=None)
        tr.doc_adapter = None
        routers = {"shipped": save_router(tr, Path(tmp) / "plain.safetensors",
                                          model_fingerprint(lm))}
        for first in firsts:
            tr.doc_adapter = QueryAdapter.for_model(lm.model, range(first, 29), rank=8)
            routers[f"+ document adapter {first}-28"] = save_router(
                tr, Path(tmp) / f"doc{first}.safetensors", model_fingerprint(lm))
        rows = []
        for rnd in range(3):
            for name, path in routers.items():
                with Memory.open(Path(tmp) / f"{len(rows)}", lm,
                                 router_path=str(path)) as mem:
                    start = time.perf_counter()
                    mem.remember_many(texts)
                    s = time.perf_counter() - start
                rows.append({"round": rnd, "router": name, "seconds": round(s, 2),
                             "tokens_per_s": round(tokens / s, 1)})
                print(rows[-1], flush=True)
    best = {n: max(r["tokens_per_s"] for r in rows if r["router"] == n) for n in routers}
    out.write_text(json.dumps({
        "command": f"python docs/results/doc-adapter-ingest-cpu.py {out} {' '.join(map(str, firsts))}",
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "threads": torch.get_num_threads(), "torch": torch.__version__},
        "texts": len(texts), "tokens": tokens, "rows": rows, "best_tokens_per_s": best,
        "ratio_best": {n: round(b / best["shipped"], 3) for n, b in best.items()}}, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), [int(x) for x in sys.argv[2:]] or [8])
