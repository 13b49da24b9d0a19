"""Benchmark the MSA kernels on one GPU: `python -m kernels.bench` from the repo root.

Checks every kernel against its reference on the GPU first, then times (do_bench median,
inputs rotated past L2) and prints one table last. Writes bench.json under $OUT if set.
"""

from __future__ import annotations

import json
import math
import os
import sys
import traceback
from collections.abc import Callable

import torch
import triton
import triton.testing

from .gather_to_device import gather_to_device
from .memory_attention import memory_attention
from .memory_attention.naive import memory_attention_ref
from .route_topk import route_topk
from .route_topk.naive import route_topk_ref

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


# ----------------------------------------------------------------------------- routing
HQ, HKV, D, P = 32, 8, 128, 64


def fold_q(q: torch.Tensor) -> torch.Tensor:
    """Plain-torch baseline's query: [T, HQ, D] -> [T, HKV*D] group-summed normalised / HQ."""
    qn = torch.nn.functional.normalize(q.float(), dim=-1)
    return (qn.view(q.shape[0], HKV, HQ // HKV, D).sum(2) / HQ).reshape(q.shape[0], -1)


def torch_route(q: torch.Tensor, keys: torch.Tensor, doc: torch.Tensor, M: int,
                mask: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Anchor: heads folded into one GEMM on pre-normalised keys, amax, scatter_reduce, topk."""
    s = (keys.view(keys.shape[0], -1) @ fold_q(q).to(keys.dtype).T).amax(1).float()
    ds = torch.full((M,), float("-inf"), device=s.device).scatter_reduce(0, doc, s, "amax")
    return ds.masked_fill(~mask, float("-inf")).topk(k)


def check_route(N: int = 60_000, M: int = 997) -> None:
    q = torch.randn(2, 64, HQ, D, device="cuda")
    doc = (torch.arange(N, device="cuda") * M // N).int()
    mask = torch.rand(M, device="cuda") > 0.1
    for dt in (torch.bfloat16, torch.float8_e4m3fn):
        keys = torch.randn(N, HKV, D, device="cuda").to(dt)
        ids, val, cs = route_topk(q, keys, doc, M, 16, doc_mask=mask, return_chunk_scores=True)
        rids, rval, rcs = route_topk_ref(q, keys, doc, M, 16, mask)
        err, verr = rel_rms(cs, rcs), (val - rval).abs().max().item()
        print(f"check route_topk {dt}: chunk-score rel-RMS {err:.2e}, top-k |dscore| {verr:.2e}")
        assert err < 5e-3 and verr < 5e-3 and bool(mask[ids].all())


def route_layers(dt: torch.dtype, N: int, n_layers: int) -> list[tuple[torch.Tensor, ...]]:
    """Random keys per layer; fp8 ones are unit per (chunk, kv head) with a per-chunk scale."""
    layers = []
    for _ in range(n_layers):
        k = torch.randn(N, HKV, D, device="cuda", dtype=torch.bfloat16)
        if dt == torch.bfloat16:
            layers.append((k, None))
            continue
        k = torch.nn.functional.normalize(k.float(), dim=-1)
        scale = k.abs().amax((1, 2)) / 448
        layers.append(((k / scale[:, None, None]).to(dt), scale))
        del k
    return layers


def max_layers(bytes_per_layer: int, want: int, reserve: float = 12 * GB) -> int:
    free, _ = torch.cuda.mem_get_info()
    return max(1, min(want, int((free - reserve) // bytes_per_layer)))


def bench_route(copy_bw: float, N: int, M: int) -> None:
    torch.cuda.empty_cache()
    q = torch.randn(64, HQ, D, device="cuda")
    doc = (torch.arange(N, device="cuda") * M // N).int()
    mask = torch.rand(M, device="cuda") > 0.1
    for dt in (torch.bfloat16, torch.float8_e4m3fn):
        esz = torch.tensor([], dtype=dt).element_size()
        nl = max_layers(N * HKV * D * esz, 18)
        layers = route_layers(dt, N, nl)
        nbytes = N * HKV * D * esz + N * 4  # keys + chunk_doc (int32) per layer

        def ours(norm: bool, f8: bool, pers: bool, layers: list = layers) -> None:
            for keys, sc in layers:
                route_topk(q, keys, doc, M, 16, doc_mask=mask, key_scale=sc,
                           keys_normalized=norm, fp8_dot=f8, persistent=pers)  # fmt: skip

        variants = [(n, False, p) for p in (False, True) for n in (False, True)]
        if dt != torch.bfloat16:
            variants += [(n, True, p) for p in (False, True) for n in (False, True)]
            agree = fp8_dot_agreement(q, layers[0], doc, M, mask)
        for norm, f8, pers in variants:
            ms = bench(lambda a=(norm, f8, pers): ours(*a), rep=500) / nl
            tag = ("prenormed keys" if norm else "norms on the fly") + (" fp8 dot" if f8 else "")
            tag += " persistent" if pers else ""
            pct = nbytes / (ms * 1e-3) / copy_bw * 100
            extra = f"; top-16 overlap vs exact {agree:.3f}" if f8 else ""
            row("route", f"{dt_name(dt)} T=64 B=1 {tag} (/layer)", ms, None,
                f"{nbytes / ms / 1e6:.0f} GB/s = {pct:.0f}% copy; 18 layers {18 * ms:.1f} ms "
                f"({nl} layers resident){extra}")  # fmt: skip
        if dt == torch.bfloat16:
            bench_route_plain(q, layers, doc, M, mask, nbytes, copy_bw)
            bench_route_batched(layers[0][0], doc, M, mask, nbytes)
        layers.clear()
        torch.cuda.empty_cache()


def bench_route_sweep(copy_bw: float, N: int, M: int) -> None:
    """fp8 pre-normalised keys: programs per SM of the persistent grid (BENCH=sweep only;
    not yet run, see kernels/NOTES.md)."""
    torch.cuda.empty_cache()
    q = torch.randn(64, HQ, D, device="cuda")
    doc = (torch.arange(N, device="cuda") * M // N).int()
    mask = torch.rand(M, device="cuda") > 0.1
    layers = route_layers(torch.float8_e4m3fn, N, 18)
    nbytes = N * HKV * D + N * 4
    for pps in (1, 2, 3, 4, 6):
        os.environ["MSA_ROUTE_PROGRAMS_PER_SM"] = str(pps)
        for f8 in (False, True):

            def run(f8: bool = f8) -> None:
                for keys, sc in layers:
                    route_topk(q, keys, doc, M, 16, doc_mask=mask, key_scale=sc,
                               keys_normalized=True, fp8_dot=f8)  # fmt: skip

            ms = bench(run, rep=500) / len(layers)
            pct = nbytes / (ms * 1e-3) / copy_bw * 100
            row("route", f"fp8 prenormed{' fp8 dot' if f8 else ''} persistent {pps}/SM", ms,
                None, f"{pct:.0f}% copy; 18 layers {18 * ms:.1f} ms")  # fmt: skip
    os.environ["MSA_ROUTE_PROGRAMS_PER_SM"] = "2"
    layers.clear()


def fp8_dot_agreement(q: torch.Tensor, layer: tuple, doc: torch.Tensor, M: int,
                      mask: torch.Tensor) -> float:  # fmt: skip
    """Fraction of the top-16 that the fp8-dot path shares with the fp16-dot path."""
    keys, sc = layer
    hits = 0
    for _ in range(8):
        qq = torch.randn_like(q)
        a, _ = route_topk(qq, keys, doc, M, 16, doc_mask=mask, key_scale=sc, keys_normalized=True)
        b, _ = route_topk(qq, keys, doc, M, 16, doc_mask=mask, key_scale=sc, keys_normalized=True,
                          fp8_dot=True)  # fmt: skip
        hits += len(set(a.tolist()) & set(b.tolist()))
    return hits / (8 * 16)


def bench_route_plain(q: torch.Tensor, layers: list, doc: torch.Tensor, M: int,
                      mask: torch.Tensor, nbytes: int, copy_bw: float) -> None:  # fmt: skip
    dl = doc.long()

    def plain() -> None:
        for k_, _ in layers:
            torch_route(q, k_, dl, M, mask, 16)

    base = bench(plain, rep=500) / len(layers)
    pct = nbytes / (base * 1e-3) / copy_bw * 100
    row("route", "bf16 plain torch folded GEMM (/layer)", base, None,
        f"{nbytes / base / 1e6:.0f} GB/s = {pct:.0f}% copy; 18 layers {18 * base:.1f} ms")


def bench_route_batched(keys: torch.Tensor, doc: torch.Tensor, M: int, mask: torch.Tensor,
                        nbytes: int) -> None:  # fmt: skip
    base = None
    for B in (1, 2, 4, 8, 16):
        q = torch.randn(B, 64, HQ, D, device="cuda")
        ms = bench(lambda q=q: route_topk(q, keys, doc, M, 16, doc_mask=mask))
        base = base or ms
        tflops = 2 * B * 64 * keys.numel() / (ms * 1e-3) / 1e12
        row("route", f"bf16 batched B={B} T=64 (one layer)", ms, base,
            f"{B / ms * 1e3:.0f} query-layers/s, {tflops:.0f} TFLOP/s, "
            f"{nbytes / ms / 1e6:.0f} GB/s")  # fmt: skip


def dt_name(dt: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float8_e4m3fn: "fp8e4m3", torch.float16: "fp16"}[dt]


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
    check_route()
    check_attn()
    sections = os.environ.get("BENCH", "route,attn,gather").split(",")
    jobs: list[tuple[str, Callable[[], None]]] = [
        ("route", lambda: bench_route(copy_bw, N=1_562_500, M=24_414)),
        ("sweep", lambda: bench_route_sweep(copy_bw, N=1_562_500, M=24_414)),
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
