"""Benchmark the MSA kernels on one GPU: `python -m kernels.bench` from the repo root.

Checks every kernel against its reference on the GPU first, then times (do_bench median,
inputs rotated past L2) and prints one table last. Writes bench.json under $OUT if set.
"""

from __future__ import annotations

import json
import math
import os
import traceback
from collections.abc import Callable

import torch
import triton

from .bench_route import bench_route, check_route
from .benchutil import ROWS, bench, bench_graph, copy_bandwidth, rel_rms, row
from .gather_to_device import gather_to_device
from .memory_attention import memory_attention
from .memory_attention.naive import memory_attention_ref

HQ, HKV, D = 32, 8, 128


# -------------------------------------------------------------------- memory attention
def make_attn(doc_tokens: int, T: int, TK: int, n_docs: int = 16, page: int = 64):
    L = n_docs * doc_tokens // page
    kp, vp = (torch.randn(L, page, HKV, D, device="cuda", dtype=torch.bfloat16) for _ in "kv")
    idx = torch.randperm(L, device="cuda")
    q = torch.randn(T, HQ, D, device="cuda", dtype=torch.bfloat16)
    kl, vl = (torch.randn(TK, HKV, D, device="cuda", dtype=torch.bfloat16) for _ in "kv")
    return q, kl, vl, kp, vp, idx


def sdpa_inputs(q, kl, vl, kp, vp, idx):
    """Gathered, contiguous [1, H, S, D] tensors for SDPA."""
    k = torch.cat([kp[idx].flatten(0, 1), kl]).transpose(0, 1)[None].contiguous()
    v = torch.cat([vp[idx].flatten(0, 1), vl]).transpose(0, 1)[None].contiguous()
    return q.transpose(0, 1)[None].contiguous(), k, v


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    from torch.nn.attention.bias import causal_lower_right

    T, S = q.shape[2], k.shape[2]
    F = torch.nn.functional.scaled_dot_product_attention
    mask = None if T == 1 else causal_lower_right(T, S)
    try:
        return F(q, k, v, attn_mask=mask, enable_gqa=True)
    except RuntimeError:  # no GQA kernel for this mask: repeat K/V (counts the same FLOPs)
        G = q.shape[1] // k.shape[1]
        return F(q, k.repeat_interleave(G, 1), v.repeat_interleave(G, 1), attn_mask=mask)


def check_attn() -> None:
    q, kl, vl, kp, vp, idx = make_attn(1024, 64, 100, n_docs=3)
    ref = memory_attention_ref(q.float(), kl.float(), vl.float(), kp.float(), vp.float(), idx,
                               D**-0.5)  # fmt: skip
    for T in (64, 1):
        err = rel_rms(memory_attention(q[-T:], kl, vl, kp, vp, idx), ref[-T:])
        print(f"check memory_attention T={T}: rel-RMS {err:.2e}")
        assert err < 2e-2


class Rotating:
    """Cycles through several input sets so that repeated calls do not hit L2."""

    def __init__(self, make: Callable[[], tuple], set_bytes: int, min_bytes: int = 4 * 10**8):
        self.sets = [make() for _ in range(max(1, math.ceil(min_bytes / set_bytes)))]
        self.i = 0

    def next(self) -> tuple:
        self.i = (self.i + 1) % len(self.sets)
        return self.sets[self.i]


def bench_attn_one(mode: str, doc_tokens: int, copy_bw: float) -> None:
    T, TK = (1, 1024) if mode == "decode" else (1024, 1024)
    S = 16 * doc_tokens
    kv_bytes = 2 * (S + TK) * HKV * D * 2
    rot = Rotating(lambda: make_attn(doc_tokens, T, TK), kv_bytes)
    rot_s = Rotating(lambda: sdpa_inputs(*make_attn(doc_tokens, T, TK)), kv_bytes)
    a = rot.sets[0]
    err = rel_rms(memory_attention(*a).float(), sdpa(*sdpa_inputs(*a))[0].transpose(0, 1))
    ms = bench(lambda: memory_attention(*rot.next()))
    base = bench(lambda: sdpa(*rot_s.next()))
    if mode == "decode":
        eager, eager_base = ms, base
        ms = bench_graph([lambda a=a: memory_attention(*a) for a in rot.sets])
        base = bench_graph([lambda a=a: sdpa(*a) for a in rot_s.sets])
        nbytes = kv_bytes + 2 * T * HQ * D * 2
        metric = (f"{nbytes / ms / 1e6:.0f} GB/s = {nbytes / (ms * 1e-3) / copy_bw * 100:.0f}% "
                  f"copy (SDPA {nbytes / base / 1e6:.0f} GB/s); CUDA graph; eager "
                  f"{eager:.3f} ms (SDPA {eager_base:.3f})")  # fmt: skip
    else:
        flops = 4 * HQ * D * (T * S + T * (T + 1) / 2)
        metric = f"{flops / ms / 1e9:.0f} TFLOP/s (SDPA {flops / base / 1e9:.0f})"
    row("attn", f"{mode} 16x{doc_tokens // 1024}k mem, T={T} TK={TK}", ms, base,
        metric + f", rel-RMS vs SDPA {err:.1e}")  # fmt: skip
    rot.sets.clear()
    rot_s.sets.clear()
    torch.cuda.empty_cache()


# ------------------------------------------------------------------------------ gather
def bench_gather(pool_bytes: int = 4 * 2**30, total: int = 2**30) -> None:
    host = torch.empty(pool_bytes, dtype=torch.uint8, pin_memory=True)
    for off in range(0, pool_bytes, 2**28):  # random, non-zero content
        host[off : off + 2**28].copy_(torch.randint(0, 256, (2**28,), dtype=torch.uint8,
                                                    device="cuda"))  # fmt: skip
    torch.cuda.synchronize()
    dst = torch.empty(total, dtype=torch.uint8, device="cuda")
    base = bench(lambda: dst.copy_(host[:total], non_blocking=True), rep=300)
    row("gather", "plain pinned copy, one 1 GiB block", base, None,
        f"{total / base / 1e6:.1f} GB/s")  # fmt: skip
    for kib in (16, 64, 256):
        rows = host.view(-1, kib * 1024)
        n = total // (kib * 1024)
        idx = torch.randperm(rows.shape[0])[:n]
        out = gather_to_device(rows, idx, "cuda")
        assert torch.equal(out[:64].cpu(), rows[idx[:64]]) and torch.equal(out[-64:].cpu(),
                                                                           rows[idx[-64:]])
        idx_d = idx.cuda()
        ms = bench(lambda rows=rows, idx_d=idx_d: gather_to_device(rows, idx_d, "cuda"), rep=300)
        row("gather", f"zero-copy gather {n} x {kib} KiB (random)", ms, base,
            f"{total / ms / 1e6:.1f} GB/s")  # fmt: skip


# --------------------------------------------------------------------------------- main
def main() -> None:
    torch.manual_seed(0)
    name = torch.cuda.get_device_name()
    print(f"device: {name}; torch {torch.__version__}; triton {triton.__version__}")
    copy_bw = copy_bandwidth()
    print(f"device-to-device copy: {copy_bw / 1e12:.2f} TB/s (read + write)")
    sections = os.environ.get("BENCH", "route,attn,gather").split(",")
    if "route" in sections:
        check_route()
    if "attn" in sections:
        check_attn()
    extras = set(sections)  # route extras: ablate, sweep
    jobs: list[tuple[str, Callable[[], None]]] = [
        ("route", lambda: bench_route(copy_bw, N=1_562_500, M=24_414, extras=extras)),
    ]
    for mode in ("decode", "prefill"):
        for doc in (1024, 4096, 16384, 65536):
            jobs.append(("attn", lambda m=mode, d=doc: bench_attn_one(m, d, copy_bw)))
    jobs.append(("gather", bench_gather))
    for sec, job in jobs:
        if sec in sections:
            try:
                job()
            except Exception:  # keep going: one failing section must not hide the others
                traceback.print_exc()
                torch.cuda.empty_cache()
    print_table(name, copy_bw)


def print_table(name: str, copy_bw: float) -> None:
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "bench.json"), "w") as f:
            json.dump({"device": name, "copy_bw": copy_bw, "rows": ROWS}, f, indent=1)
    print(f"\n=== {name}, copy {copy_bw / 1e12:.2f} TB/s ===")
    print("| op | config | ms | baseline ms | result |\n|---|---|---|---|---|")
    for r in ROWS:
        b = f"{r['base_ms']:.3f}" if r["base_ms"] else "-"
        print(f"| {r['op']} | {r['config']} | {r['ms']:.3f} | {b} | {r['metric']} |")


if __name__ == "__main__":
    main()
