"""Memory Parallel routing latency against world size, on random model-shaped keys (issue 15).

    torchrun --nproc-per-node 1 -m msa_agent.bench.parallel_bench --out DIR --tokens 1e8
    torchrun --nproc-per-node 2 -m msa_agent.bench.parallel_bench --out DIR --tokens 1e8
    torchrun --nproc-per-node 4 -m msa_agent.bench.parallel_bench --out DIR --tokens 1e8
    torchrun --nproc-per-node 2 -m msa_agent.bench.parallel_bench --out DIR --tokens 1e6 \\
        --device cpu --queries 5            # gloo smoke test

**No model, no space.** Each rank makes its own shard of unit routing keys in place
(``--docs-tokens`` tokens a document, 64 tokens a chunk; shape ``[chunks, L, Hkv, D]`` of
``--shape``: ``qwen3-4b`` = the paper's 18 MSA layers, 8 KV / 32 query heads of 128, or
``smollm2`` = 15 layers, 3 / 9 heads of 64), fp32 as the runtime keeps them, straight into a
``RoutingIndex`` (``add_unit``). Memory ``i`` lives on rank ``i % world``, as in
``msa_agent.runtime.parallel``. A query is random ``[T, L, Hq, D]`` router queries.

**Per query, timed on rank 0** (``torch.cuda.synchronize`` and a barrier around each stage, so
stage times add up; ms, p50 / p95 / mean over ``--queries`` after ``--warmup``), the same calls
as ``ShardedEngine.route(mode="msa")``: ``broadcast`` (rank 0's router queries to all ranks),
``local_rank`` (``RoutingIndex.rank`` on the shard: the fused ``route_topk`` on CUDA),
``gather_merge`` (all-gather of each rank's top-k and the merge), ``owner_rows`` (the selected
memories' routing-key rows all-gathered from their owners), ``evidence`` (per-layer scores of
those rows) and ``total``. The JSON also holds the bytes each collective moved per rank, and
with ``--check N`` (small sizes only: rank 0 gathers every key) whether N sharded routes equal
one process's ``RoutingIndex.rank`` over the whole index (ids, scores, evidence).

Measured on one and two H200s with NCCL (docs/scale.md, "Memory Parallel") and smoke-tested
on CPU with gloo; four GPUs not yet.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from msa_agent.runtime.parallel import (
    Comm,
    gather_rows,
    gather_top,
    init_from_env,
    local_top,
    shard_of,
)
from msa_agent.runtime.routing import RoutingIndex

SHAPES = {"qwen3-4b": (18, 8, 32, 128), "smollm2": (15, 3, 9, 64)}  # L, Hkv, Hq, D
CHUNK = 64
BLOCK_ROWS = 65536  # rows generated and normalised at a time


def shard_index(n_docs: int, chunks: int, shape: tuple[int, int, int, int], comm: Comm,
                device: torch.device, seed: int) -> RoutingIndex:
    """This rank's memories (``rank, rank + world, ...``), ``chunks`` unit key rows each."""
    layers, hkv, _, d = shape
    mine = list(shard_of(n_docs, comm.rank, comm.world))
    keys = torch.empty(len(mine) * chunks, layers, hkv, d, device=device)  # [N, L, Hkv, D]
    g = torch.Generator(device=device).manual_seed(seed + comm.rank)
    for s in range(0, keys.shape[0], BLOCK_ROWS):
        blk = keys[s:s + BLOCK_ROWS]
        blk.normal_(generator=g)
        blk /= blk.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    index = RoutingIndex(device)
    index.add_unit([f"m{p}" for p in mine], ["bench"] * len(mine), keys, [chunks] * len(mine))
    return index


def timed(stages: dict[str, list[float]], name: str, comm: Comm, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` between synchronised barriers; its ms go to ``stages[name]``."""
    _sync(comm)
    t = time.perf_counter()
    out = fn()
    _sync(comm)
    stages.setdefault(name, []).append((time.perf_counter() - t) * 1e3)
    return out


def one_query(index: RoutingIndex, comm: Comm, ids: list[str], q: torch.Tensor | None, k: int,
              stages: dict[str, list[float]]) -> None:
    """``ShardedEngine.route(mode="msa")``'s collectives and scoring, stage by stage."""
    t = time.perf_counter()
    q = timed(stages, "broadcast", comm, lambda: comm.broadcast(q))
    mask = torch.ones(len(index.doc_ids), dtype=torch.bool)
    mine = timed(stages, "local_rank", comm,
                 lambda: local_top(index, comm.rank, comm.world, q, k, mask, "heads"))
    top = timed(stages, "gather_merge", comm, lambda: gather_top(comm, mine, k))
    sub = timed(stages, "owner_rows", comm, lambda: gather_rows(index, comm, [p for p, _ in top],
                                                                ids))
    at = {p: i for i, p in enumerate(sorted(p for p, _ in top))}
    timed(stages, "evidence", comm, lambda: sub.evidence([at[p] for p, _ in top],
                                                         [s for _, s in top], q))
    stages.setdefault("total", []).append((time.perf_counter() - t) * 1e3)


def check(index: RoutingIndex, comm: Comm, ids: list[str], q: torch.Tensor | None, k: int
          ) -> dict[str, Any] | None:
    """``--check`` (small sizes): the whole index gathered on rank 0, ranked by one process's
    ``RoutingIndex.rank``, against the sharded route of the same query (rank 0's answer)."""
    q = comm.broadcast(q)
    mask = torch.ones(len(index.doc_ids), dtype=torch.bool)
    top = gather_top(comm, local_top(index, comm.rank, comm.world, q, k, mask, "heads"), k)
    sub = gather_rows(index, comm, [p for p, _ in top], ids)
    at = {p: i for i, p in enumerate(sorted(p for p, _ in top))}
    got = sub.evidence([at[p] for p, _ in top], [s for _, s in top], q)
    whole = gather_rows(index, comm, range(len(ids)), ids)  # every row, global order
    if comm.rank != 0:
        return None
    want = whole.rank(q, k, torch.ones(len(ids), dtype=torch.bool))
    diff = max((abs(a - b) for a, b in zip(got.scores, want.scores)), default=0.0)
    return {"ids_equal": [p for p, _ in top] == want.docs, "scores_equal": got.scores ==
            want.scores, "max_score_diff": diff, "evidence_equal":
            (got.layer_scores, got.best_chunk) == (want.layer_scores, want.best_chunk)}


def _sync(comm: Comm) -> None:
    if comm.device.type == "cuda":
        torch.cuda.synchronize()
    dist.barrier()


def summary(ms: list[float]) -> dict[str, float]:
    t = torch.tensor(ms)
    return {"p50": float(t.quantile(0.5)), "p95": float(t.quantile(0.95)),
            "mean": float(t.mean()), "min": float(t.min())}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="msa_agent.bench.parallel_bench")
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokens", type=float, default=1e8)
    ap.add_argument("--doc-tokens", type=int, default=4096)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="qwen3-4b")
    ap.add_argument("--query-tokens", type=int, default=32)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--check", type=int, default=0,
                    help="queries checked against the whole index on rank 0 (small sizes)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    init_from_env(device)
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    comm, shape = Comm(device), SHAPES[args.shape]
    chunks = -(-args.doc_tokens // CHUNK)
    n_docs = max(comm.world, int(args.tokens) // args.doc_tokens)
    t0 = time.perf_counter()
    index = shard_index(n_docs, chunks, shape, comm, device, seed=0)
    _sync(comm)
    build_s = time.perf_counter() - t0
    ids = [f"m{p}" for p in range(n_docs)]
    g = torch.Generator().manual_seed(1)
    layers, _, hq, d = shape
    stages: dict[str, list[float]] = {}
    for i in range(args.warmup + args.queries):
        q = torch.randn(args.query_tokens, layers, hq, d, generator=g).to(device) \
            if comm.rank == 0 else None
        one_query(index, comm, ids, q, args.k, stages if i >= args.warmup else {})
    checks = [check(index, comm, ids, torch.randn(args.query_tokens, layers, hq, d,
                                                  generator=g).to(device), args.k)
              for _ in range(args.check)]
    if comm.rank == 0:
        report = _report(args, comm, shape, n_docs, chunks, index, build_s, stages)
        report["checks"] = checks
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"parallel-world{comm.world}.json").write_text(json.dumps(report, indent=1))
        print(json.dumps(report["stages_ms"], indent=1))
    dist.destroy_process_group()


def _report(args: argparse.Namespace, comm: Comm, shape: tuple[int, int, int, int],
            n_docs: int, chunks: int, index: RoutingIndex, build_s: float,
            stages: dict[str, list[float]]) -> dict[str, Any]:
    layers, hkv, hq, d = shape
    row = layers * hkv * d * 4
    return {
        "note": "random model-shaped keys, no model; see the module docstring",
        "world": comm.world, "backend": dist.get_backend(), "device": str(index.device),
        "gpu": torch.cuda.get_device_name() if index.device.type == "cuda" else None,
        "torch": torch.__version__, "python": platform.python_version(),
        "commit": os.environ.get("MSA_COMMIT"), "shape": args.shape, "tokens": args.tokens,
        "documents": n_docs, "chunks_per_doc": chunks, "rows_rank0": index.rows,
        "keys_gb_rank0": index.rows * row / 1e9, "build_s": build_s, "k": args.k,
        "query_tokens": args.query_tokens, "queries": args.queries,
        "bytes_per_query_per_rank": {
            "broadcast": args.query_tokens * layers * hq * d * 4,
            "gather_merge": comm.world * args.k * 16,
            "owner_rows": args.k * chunks * row},
        "stages_ms": {name: summary(ms) for name, ms in stages.items()},
    }


if __name__ == "__main__":
    main()
