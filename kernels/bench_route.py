"""Routing benchmark (issue 4): `route_topk` at Qwen3-4B router shapes over 100M tokens.

Called from kernels/bench.py (`BENCH=route[,ablate,sweep] python -m kernels.bench`). If
kernels/route_topk/_v1.py exists (a copy of an earlier parallel.py, never committed), its
rows are timed in the same run as the baseline.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable

import torch

from .benchutil import GB, bench, bench_graph, dt_name, rel_rms, row
from .route_topk import route_topk
from .route_topk.naive import route_topk_ref

HQ, HKV, D = 32, 8, 128
Layers = list[tuple[torch.Tensor, torch.Tensor | None]]


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


def has_v1() -> bool:
    return importlib.util.find_spec(f"{__package__}.route_topk._v1") is not None


def v1_route(q: torch.Tensor, keys: torch.Tensor, doc: torch.Tensor, M: int, k: int, *,
             doc_mask: torch.Tensor | None = None, key_scale: torch.Tensor | None = None,
             keys_normalized: bool = False, fp8_dot: bool = False,
             persistent: bool = True) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """The earlier kernel (baseline), same arguments as route_topk."""
    from .route_topk import _v1  # type: ignore[attr-defined]

    qb = q if q.dim() == 4 else q[None]
    ids, val, _ = _v1.route_topk_triton(qb, keys, doc, M, k, doc_mask, key_scale,
                                        keys_normalized, fp8_dot, False, persistent)  # fmt: skip
    return ids, val


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


def route_layers(dt: torch.dtype, N: int, n_layers: int) -> Layers:
    """Random keys per layer; fp8 ones are unit per (chunk, kv head) with a per-chunk scale."""
    layers: Layers = []
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


class Setup:
    """One query, the chunk -> document map, the document mask and the resident layers."""

    def __init__(self, dt: torch.dtype, N: int, M: int, copy_bw: float):
        self.q = torch.randn(64, HQ, D, device="cuda")
        self.doc = (torch.arange(N, device="cuda") * M // N).int()
        self.mask = torch.rand(M, device="cuda") > 0.1
        self.dt, self.N, self.M, self.copy_bw = dt, N, M, copy_bw
        esz = torch.tensor([], dtype=dt).element_size()
        self.nbytes = N * HKV * D * esz + N * 4  # keys + chunk_doc (int32) per layer
        self.layers = route_layers(dt, N, max_layers(N * HKV * D * esz, 18))

    def loop(self, fn: Callable, layers: Layers | None = None, **kw: bool) -> Callable[[], None]:
        """All resident layers, one route call each (one query)."""
        layers = self.layers if layers is None else layers
        doc = self.doc[: layers[0][0].shape[0]]

        def go() -> None:
            for keys, sc in layers:
                fn(self.q, keys, doc, self.M, 16, doc_mask=self.mask, key_scale=sc, **kw)

        return go

    def time(self, tag: str, fn: Callable, note: str = "", **kw: bool) -> float:
        ms = bench(self.loop(fn, **kw), rep=500) / len(self.layers)
        self.report(tag, ms, note)
        return ms

    def report(self, tag: str, ms: float, note: str = "") -> None:
        pct = self.nbytes / (ms * 1e-3) / self.copy_bw * 100
        row("route", f"{dt_name(self.dt)} T=64 B=1 {tag} (/layer)", ms, None,
            f"{self.nbytes / ms / 1e6:.0f} GB/s = {pct:.1f}% copy; 18 layers {18 * ms:.2f} ms "
            f"({len(self.layers)} resident){note}")  # fmt: skip


def tuning_report(label: str) -> dict | None:
    """The persistent kernel's autotune choice and its best timings (last tuned key)."""
    from .route_topk.parallel import route_score_persistent_kernel as kern

    best = getattr(kern, "best_config", None)
    timings = getattr(kern, "configs_timings", None) or {}

    def med(v: object) -> float:
        return float(v[0] if isinstance(v, (list, tuple)) else v)  # type: ignore[index]

    print(f"tuning [{label}]: best {best}")
    if best not in timings:  # a single config (pruned or forced): nothing was compared
        timings = {}
    for c, v in sorted(timings.items(), key=lambda kv: med(kv[1]))[:8]:
        print(f"    {med(v) * 1e3:8.1f} us  {c}")
    if best is None:
        return None
    return {"BN": best.kwargs["BN"], "BK": best.kwargs["BK"], "w": best.num_warps,
            "s": best.num_stages}  # fmt: skip


def bench_route(copy_bw: float, N: int, M: int, extras: set[str]) -> None:
    """fp8 then bf16 rows of docs/performance.md; extras: 'ablate', 'sweep' (fp8 only)."""
    torch.cuda.empty_cache()
    v1 = has_v1()
    s = Setup(torch.float8_e4m3fn, N, M, copy_bw)
    pre = {"keys_normalized": True}
    s.time("prenormed fp8 dot persistent", route_topk, fp8_dot=True, **pre)
    best = tuning_report("fp8 prenormed fp8 dot")
    s.time("prenormed fp16 dot persistent", route_topk, **pre)
    tuning_report("fp8 prenormed fp16 dot")
    s.time("norms on the fly fp16 dot persistent", route_topk)
    if v1:
        s.time("v1 prenormed fp8 dot persistent", v1_route, fp8_dot=True, **pre)
        s.time("v1 prenormed fp16 dot persistent", v1_route, **pre)
    agree = fp8_dot_agreement(s)
    row("route", "fp8 dot vs fp16 dot: top-16 overlap (8 queries)", agree, None, "fraction")
    bench_route_graph(s)
    if "ablate" in extras and best is not None:
        bench_route_ablate(s, best)
    if "sweep" in extras:
        bench_route_sweep(s)
    s.layers.clear()
    torch.cuda.empty_cache()
    s = Setup(torch.bfloat16, N, M, copy_bw)
    s.time("norms on the fly persistent", route_topk)
    tuning_report("bf16 norms on the fly")
    s.time("prenormed keys persistent", route_topk, keys_normalized=True)
    tuning_report("bf16 prenormed")
    s.time("norms on the fly, one program per block", route_topk, persistent=False)
    os.environ["MSA_ROUTE_SCALE_A"] = "1"
    s.time("norms on the fly, key tile scaled before the dot (batched way)", route_topk)
    os.environ.pop("MSA_ROUTE_SCALE_A")
    if v1:
        s.time("v1 norms on the fly persistent", v1_route)
    bench_route_plain(s)
    bench_route_batched(s, v1)
    s.layers.clear()
    torch.cuda.empty_cache()


def bench_route_graph(s: Setup) -> None:
    """The 18-layer loop replayed as one CUDA graph: what launch gaps cost."""
    try:
        ms = bench_graph([s.loop(route_topk, keys_normalized=True, fp8_dot=True)])
        s.report("prenormed fp8 dot persistent, 18-layer CUDA graph", ms / len(s.layers))
    except Exception as e:  # noqa: BLE001 - a bench row, not a test
        print(f"graph replay failed: {e!r}")


def bench_route_ablate(s: Setup, best: dict) -> None:
    """Each change of this kernel off in turn, at the tuned tile (no re-tuning)."""
    os.environ["MSA_ROUTE_CONFIG"] = f"{best['BN']},{best['BK']},{best['w']},{best['s']}"
    kw = {"keys_normalized": True, "fp8_dot": True}
    os.environ["MSA_ROUTE_TRITON_TOPK"] = "0"
    s.time("prenormed fp8 dot, torch.topk instead of the Triton top-k", route_topk, **kw)
    os.environ.pop("MSA_ROUTE_TRITON_TOPK")
    for pre, rel in ((0, 1), (1, 0), (0, 0)):
        os.environ["MSA_ROUTE_PRE_REDUCE"], os.environ["MSA_ROUTE_RELAXED"] = str(pre), str(rel)
        tag = f"prenormed fp8 dot, pre-reduce {pre}, relaxed atomics {rel}"
        s.time(tag, route_topk, f"; tile {best}", **kw)
    for key in ("MSA_ROUTE_PRE_REDUCE", "MSA_ROUTE_RELAXED", "MSA_ROUTE_CONFIG"):
        os.environ.pop(key)


def bench_route_sweep(s: Setup) -> None:
    """Programs per SM of the persistent grid (the tile stays the one tuned at 2 per SM)."""
    for f8 in (True, False):
        for pps in (1, 2, 3, 4):
            os.environ["MSA_ROUTE_PROGRAMS_PER_SM"] = str(pps)
            s.time(f"prenormed{' fp8 dot' if f8 else ' fp16 dot'} persistent {pps}/SM",
                   route_topk, keys_normalized=True, fp8_dot=f8)  # fmt: skip
    os.environ["MSA_ROUTE_PROGRAMS_PER_SM"] = "2"


def fp8_dot_agreement(s: Setup) -> float:
    """Fraction of the top-16 that the fp8-dot path shares with the fp16-dot path."""
    keys, sc = s.layers[0]
    hits = 0
    for _ in range(8):
        qq = torch.randn_like(s.q)
        kw = {"doc_mask": s.mask, "key_scale": sc, "keys_normalized": True}
        a, _ = route_topk(qq, keys, s.doc, s.M, 16, **kw)
        b, _ = route_topk(qq, keys, s.doc, s.M, 16, fp8_dot=True, **kw)
        hits += len(set(a.tolist()) & set(b.tolist()))
    return hits / (8 * 16)


def bench_route_plain(s: Setup) -> None:
    dl = s.doc.long()

    def plain() -> None:
        for k_, _ in s.layers:
            torch_route(s.q, k_, dl, s.M, s.mask, 16)

    s.report("plain torch folded GEMM", bench(plain, rep=500) / len(s.layers))


def bench_route_batched(s: Setup, v1: bool) -> None:
    """B queries share one pass over one bf16 layer (norms on the fly unless noted)."""
    keys = s.layers[0][0]
    runs: list[tuple[str, Callable, dict, dict, tuple[int, ...]]] = [
        ("", route_topk, {}, {}, (1, 2, 4, 8, 16)),
        ("product scaled after the dot ", route_topk, {"MSA_ROUTE_SCALE_A": "0"}, {}, (16,)),
        ("prenormed keys ", route_topk, {}, {"keys_normalized": True}, (1, 2, 4, 8, 16)),
    ]
    if v1:
        runs.append(("v1 ", v1_route, {}, {}, (4, 16)))
    for tag, fn, env, kw, sizes in runs:
        os.environ.update(env)
        for B in sizes:
            q = torch.randn(B, 64, HQ, D, device="cuda")
            ms = bench(lambda q=q, fn=fn, kw=kw: fn(q, keys, s.doc, s.M, 16, doc_mask=s.mask,
                                                     **kw))  # fmt: skip
            tflops = 2 * B * 64 * keys.numel() / (ms * 1e-3) / 1e12
            row("route", f"bf16 {tag}batched B={B} T=64 persistent (one layer)", ms, None,
                f"{B / ms * 1e3:.0f} query-layers/s, {tflops:.0f} TFLOP/s, "
                f"{s.nbytes / ms / 1e6:.0f} GB/s")  # fmt: skip
            if fn is route_topk:
                tuning_report(f"{tag}batched B={B}")
        for key in env:
            os.environ.pop(key)
