"""Shared helpers of the kernel benchmarks (kernels/bench.py, kernels/bench_route.py)."""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
import triton.testing

ROWS: list[dict] = []
GB = 1e9


def bench(fn: Callable[[], object], rep: int = 200) -> float:
    """Median milliseconds."""
    return triton.testing.do_bench(fn, warmup=50, rep=rep, return_mode="median")


def bench_graph(fns: list[Callable[[], object]]) -> float:
    """Median ms per call of a CUDA graph replaying every fn once (no launch overhead)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for f in fns:
            f()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for f in fns:
            f()
    return bench(g.replay) / len(fns)


def row(op: str, cfg: str, ms: float, base_ms: float | None, metric: str, note: str = "") -> None:
    r = {"op": op, "config": cfg, "ms": ms, "base_ms": base_ms, "metric": metric, "note": note}
    ROWS.append(r)
    print(f"  {op:8s} {cfg:38s} {ms:9.3f} ms  base {base_ms or float('nan'):9.3f}  {metric}")
    sys.stdout.flush()


def rel_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt()).item()


def copy_bandwidth() -> float:
    """Device-to-device copy, bytes read + written per second."""
    a = torch.randn(2**29, device="cuda")  # 2 GiB
    b = torch.empty_like(a)
    ms = bench(lambda: b.copy_(a))
    return 2 * a.numel() * 4 / (ms * 1e-3)


def dt_name(dt: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float8_e4m3fn: "fp8e4m3", torch.float16: "fp16"}[dt]
