"""Routing at scale on one GPU (issue 11): latency and top-k agreement up to 100M tokens.

    python -m msa_agent.bench.gpu_routing --out DIR          # on a CUDA machine
    python -m msa_agent.bench.gpu_routing --plot DIR/gpu-routing.json   # plot only (CPU)

Keys are **model-shaped random vectors, not encoded text**: the routing-key geometry of the
embedded default model with its shipped learned router (SmolLM2-135M-Instruct, MSA layers
15-29, 3 KV / 9 query heads of 64 dims, read from the router file's header), 64-token chunks,
documents of 4,096 tokens, 10% of documents in another namespace (filtered out before top-k).
The keys are drawn in fp16 (the store's dtype) and go through ``RoutingIndex.add`` as the
runtime loads a space, which keeps unit fp32 keys resident. Per memory size it times, per
query (wall clock, synchronised):

- ``rank``: ``RoutingIndex.rank(q, k, mask)`` with the fused Triton kernel, as recall's
  ``msa`` mode calls it at query time (layers as heads, explanation included);
- ``kernel``: the fused ``route_topk`` call that ``rank`` makes, alone;
- ``naive``: ``RoutingIndex.rank`` on the plain-torch rule of ``kernels/route_topk/naive.py``
  in fp32 (TF32 off): the reference whose top-k the fused path is compared with;
- ``kernel_fp16``: the same kernel over fp16 unit keys (half the bytes; not what the runtime
  keeps resident today).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

ROUTER = Path(__file__).resolve().parent.parent / "routers" / "smollm2-135m-instruct.safetensors"
SIZES = (100_000_000, 64_000_000, 16_000_000, 4_000_000, 1_000_000)
NS, OTHER = "bench", "other"


def _ensure_kernels() -> None:
    """Load ``kernels/`` as ``msa_agent.kernels`` on a checkout that is not pip-installed (what
    setuptools' package-dir mapping does), so that the runtime's routing module imports."""
    try:
        import msa_agent.kernels  # noqa: F401
    except ModuleNotFoundError:
        import importlib.util

        import msa_agent

        src = Path(__file__).resolve().parents[2] / "kernels"
        spec = importlib.util.spec_from_file_location(
            "msa_agent.kernels", src / "__init__.py", submodule_search_locations=[str(src)]
        )
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules["msa_agent.kernels"] = mod
        spec.loader.exec_module(mod)
        msa_agent.kernels = mod  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Shape:
    """Routing-key geometry and memory layout of one run."""

    layers: int = 15
    n_heads: int = 9
    n_kv_heads: int = 3
    head_dim: int = 64
    chunk_tokens: int = 64
    doc_tokens: int = 4096
    query_tokens: int = 32
    masked_every: int = 10  # every 10th document is in another namespace
    top_tokens: int = 1  # the rule's query side (route_top_tokens): 1 = max over tokens

    @property
    def key_elems(self) -> int:
        """Elements of one chunk's routing key (all layers and kv heads)."""
        return self.layers * self.n_kv_heads * self.head_dim


def shipped_shape(path: Path = ROUTER, query_tokens: int = 32, top_tokens: int = 1
                  ) -> tuple[Shape, dict[str, Any]]:
    """The shape of the shipped router's keys and queries (from its safetensors header)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    model = json.loads(meta["shape"])
    layers = json.loads(meta["layers"])
    shape = Shape(
        layers=len(layers),
        n_heads=model["n_heads"],
        n_kv_heads=model["n_kv_heads"],
        head_dim=model["head_dim"],
        query_tokens=query_tokens,
        top_tokens=top_tokens,
    )
    return shape, {"router_file": path.name, "msa_layers": layers, "model_shape": model}


def overlap_at_k(got: Sequence[int], ref: Sequence[int], k: int) -> float:
    """Fraction of the reference's top-``k`` documents that ``got``'s top-``k`` also holds."""
    want = list(ref)[:k]
    if not want:
        return 1.0
    return len(set(list(got)[:k]) & set(want)) / len(want)


def pct(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (linear interpolation), ``q`` in [0, 100]."""
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_unit_fp16(
    n: int, shape: Shape, device: torch.device, block: int = 1 << 16
) -> torch.Tensor:
    """``[n, L, H, D]`` fp16 random keys (not text), drawn in blocks on ``device``."""
    out = torch.empty(
        (n, shape.layers, shape.n_kv_heads, shape.head_dim), dtype=torch.float16, device=device
    )
    for s in range(0, n, block):
        out[s : s + block].normal_()
    return out


def build_index(tokens: int, shape: Shape, device: torch.device) -> Any:
    """A ``RoutingIndex`` over ``tokens`` of memory, filled through ``add`` as the runtime
    loads a space: documents of ``doc_tokens`` (the last one shorter), every
    ``masked_every``-th one in another namespace."""
    from msa_agent.runtime.routing import RoutingIndex

    n_chunks = math.ceil(tokens / shape.chunk_tokens)
    per_doc = shape.doc_tokens // shape.chunk_tokens
    raw = random_unit_fp16(n_chunks, shape, device)
    route_k = list(torch.split(raw, per_doc))
    ids = [f"d{i}" for i in range(len(route_k))]
    ns = [
        OTHER if i % shape.masked_every == shape.masked_every - 1 else NS for i in range(len(ids))
    ]
    index = RoutingIndex(device, use_kernel=True, top_tokens=shape.top_tokens)
    index.add(ids, ns, route_k)
    del raw, route_k
    return index


def timed(
    fn: Callable[[torch.Tensor], Any],
    queries: Sequence[torch.Tensor],
    warmup: int,
    device: torch.device,
) -> tuple[list[float], list[Any]]:
    """Milliseconds per call (wall clock, synchronised) and outputs, after ``warmup`` calls on
    the first queries (whose timings are dropped)."""
    for q in queries[:warmup]:
        fn(q)
    times, outs = [], []
    for q in queries[warmup:]:
        sync(device)
        t0 = time.perf_counter()
        out = fn(q)
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
        outs.append(out)
    return times, outs


def latency(times: Sequence[float]) -> dict[str, float]:
    return {"p50_ms": pct(times, 50), "p95_ms": pct(times, 95), "min_ms": min(times),
            "n": len(times)}  # fmt: skip


def kernel_fn(
    index: Any, keys: torch.Tensor, k: int, mask: torch.Tensor
) -> Callable[[torch.Tensor], list[int]]:
    """The fused ``route_topk`` call of ``RoutingIndex._rank_fused``, alone (ids back to host)."""
    from msa_agent.kernels import route_topk

    n, d = keys.shape[0], keys.shape[-1]
    flat = keys.view(n, -1, d)
    dmask = mask.to(index.device)
    kk = min(k, int(mask.sum()))

    def go(q: torch.Tensor) -> list[int]:
        ids, _ = route_topk(
            q.reshape(q.shape[0], -1, d),
            flat,
            index.chunk_doc,
            len(index.doc_ids),
            kk,
            doc_mask=dmask,
            keys_normalized=True,
            top_tokens=index.top_tokens,
        )
        return [int(i) for i in ids.tolist() if i >= 0]

    return go


def rank_fn(
    index: Any, k: int, mask: torch.Tensor, use_kernel: bool
) -> Callable[[torch.Tensor], list[int]]:
    def go(q: torch.Tensor) -> list[int]:
        index.use_kernel = use_kernel
        return index.rank(q, k, mask, "heads", explain=True).docs

    return go


def bandwidth(nbytes: int, ms: float, copy_bw: float | None) -> dict[str, float | None]:
    gbs = nbytes / (ms * 1e-3) / 1e9
    return {"GB_per_s": gbs, "pct_copy_bw": None if copy_bw is None else 100 * gbs * 1e9 / copy_bw}


def measure_size(
    tokens: int,
    shape: Shape,
    k: int,
    n_queries: int,
    warmup: int,
    device: torch.device,
    copy_bw: float | None = None,
    fp16: bool = True,
    seed: int = 0,
    key_dtypes: Sequence[str] = (),
) -> dict[str, Any]:
    """One memory size: latency of each path, overlap@k with the fp32 reference, bytes."""
    _ensure_kernels()
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    index = build_index(tokens, shape, device)
    sync(device)
    build_s = time.perf_counter() - t0
    mask = index.mask_for(NS)
    qshape = (shape.query_tokens, shape.layers, shape.n_heads, shape.head_dim)
    queries = [torch.randn(qshape, device=device) for _ in range(warmup + n_queries)]
    n = index.keys.shape[0]
    key_bytes, doc_bytes = index.keys.numel() * index.keys.element_size(), n * 8
    row: dict[str, Any] = {
        "tokens": tokens, "chunks": n, "docs": len(index.doc_ids),
        "docs_masked_out": len(index.doc_ids) - int(mask.sum()), "k": k,
        "query_tokens": shape.query_tokens, "queries": n_queries, "warmup": warmup,
        "resident_key_dtype": str(index.keys.dtype).removeprefix("torch."),
        "resident_key_bytes": key_bytes, "chunk_doc_bytes": index.chunk_doc.numel() * 8,
        "build_s": build_s,
    }  # fmt: skip
    t_rank, fused = timed(rank_fn(index, k, mask, True), queries, warmup, device)
    t_kern, kern = timed(kernel_fn(index, index.keys, k, mask), queries, warmup, device)
    row["rank"] = {**latency(t_rank), **bandwidth(key_bytes + doc_bytes, pct(t_rank, 50), copy_bw)}
    row["kernel"] = {**latency(t_kern), **bandwidth(key_bytes + doc_bytes, pct(t_kern, 50),
                                                     copy_bw)}  # fmt: skip
    ref = naive_reference(index, k, mask, queries, warmup, device, row)
    if ref is not None:
        row["overlap_rank"] = agreement(fused, ref, k)
        row["overlap_kernel"] = agreement(kern, ref, k)
    if fp16:
        half = index.keys.half()
        t16, out16 = timed(kernel_fn(index, half, k, mask), queries, warmup, device)
        row["kernel_fp16"] = {
            **latency(t16),
            "key_bytes": half.numel() * 2,
            **bandwidth(half.numel() * 2 + doc_bytes, pct(t16, 50), copy_bw),
        }
        if ref is not None:
            row["overlap_kernel_fp16"] = agreement(out16, ref, k)
        del half
    for dt in key_dtypes:
        row[f"rank_{dt}"] = narrow_rank(index, dt, k, mask, queries, warmup, device, ref,
                                        copy_bw)
    if device.type == "cuda":
        row["peak_gpu_bytes"] = torch.cuda.max_memory_allocated(device)
    del index
    return row


def narrow_rank(index: Any, key_dtype: str, k: int, mask: torch.Tensor,
                queries: Sequence[torch.Tensor], warmup: int, device: torch.device,
                ref: list[list[int]] | None, copy_bw: float | None) -> dict[str, Any]:
    """``RoutingIndex.rank`` (fused) over the same keys held resident as ``key_dtype``
    (``MemoryConfig.routing_key_dtype``), timed, with its top-k agreement against the fp32
    reference."""
    from msa_agent.runtime.routing import RoutingIndex

    narrow = RoutingIndex(device, use_kernel=True, top_tokens=index.top_tokens,
                          key_dtype=key_dtype)
    counts = torch.bincount(index.chunk_doc, minlength=len(index.doc_ids)).tolist()
    # same documents in the same order: the fp32 index's mask applies as it is
    narrow.add_unit(index.doc_ids, [NS] * len(counts), index.unit_rows(), counts)
    t, out = timed(rank_fn(narrow, k, mask, True), queries, warmup, device)
    nbytes = narrow.keys.numel() * narrow.keys.element_size()
    nbytes += 0 if narrow.key_scale is None else narrow.key_scale.numel() * 4
    res: dict[str, Any] = {**latency(t), "key_bytes": nbytes,
                           **bandwidth(nbytes + narrow.chunk_doc.numel() * 8, pct(t, 50),
                                       copy_bw)}
    if ref is not None:
        res["overlap"] = agreement(out, ref, k)
    del narrow
    return res


def naive_reference(
    index: Any,
    k: int,
    mask: torch.Tensor,
    queries: Sequence[torch.Tensor],
    warmup: int,
    device: torch.device,
    row: dict[str, Any],
) -> list[list[int]] | None:
    """Time the fp32 plain-torch rule and return its top-k per query (None: out of memory)."""
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        t_ref, ref = timed(rank_fn(index, k, mask, False), queries, warmup, device)
    except torch.OutOfMemoryError as e:
        row["naive"] = {"error": f"out of memory: {e}".splitlines()[0]}
        return None
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        index.use_kernel = True
    key_bytes = index.keys.numel() * index.keys.element_size()
    row["naive"] = {**latency(t_ref), "note": "fp32, TF32 off"}
    row["naive"]["GB_per_s"] = key_bytes / (pct(t_ref, 50) * 1e-3) / 1e9
    return ref


def agreement(
    got: Sequence[Sequence[int]], ref: Sequence[Sequence[int]], k: int
) -> dict[str, float]:
    """Mean and min overlap@k over queries, and the fraction of queries with identical sets."""
    ov = [overlap_at_k(g, r, k) for g, r in zip(got, ref, strict=True)]
    return {"mean": statistics.fmean(ov), "min": min(ov),
            "identical_sets": sum(o == 1.0 for o in ov) / len(ov)}  # fmt: skip


def copy_bandwidth() -> float:
    """Device-to-device copy, bytes read + written per second (as kernels/benchutil.py)."""
    import triton.testing

    a = torch.randn(2**29, device="cuda")  # 2 GiB
    b = torch.empty_like(a)
    ms = triton.testing.do_bench(lambda: b.copy_(a), warmup=50, rep=200, return_mode="median")
    return 2 * 2**29 * 4 / (ms * 1e-3)


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True, cwd=Path(__file__).resolve().parent)  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def environment(commit: str | None) -> dict[str, Any]:
    import triton

    env: dict[str, Any] = {
        "torch": torch.__version__, "triton": triton.__version__,
        "python": sys.version.split()[0], "commit": commit or git_commit(),
        "command": "python -m msa_agent.bench.gpu_routing " + shlex.join(sys.argv[1:]),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "autotune": os.environ.get("MSA_KERNELS_NO_AUTOTUNE", "0") != "1",
    }  # fmt: skip
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env |= {"machine": torch.cuda.get_device_name(), "gpu_memory_bytes": p.total_memory,
                "sms": p.multi_processor_count}  # fmt: skip
    return env


def fmt_ms(part: dict[str, Any] | None) -> str:
    if not part or "p50_ms" not in part:
        return "n/a"
    return f"{part['p50_ms']:.2f} / {part['p95_ms']:.2f}"


def table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of the rows (times are p50 / p95 ms per query, all 15 layers)."""
    head = ("| tokens | chunks | docs | keys resident | rank p50 / p95 ms | kernel p50 / p95 ms "
            "| kernel % copy bw | naive fp32 p50 / p95 ms | overlap@k rank | "
            "fp16-key kernel p50 / p95 ms | overlap@k fp16 |")  # fmt: skip
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['tokens'] / 1e6:g}M | failed: {r['error'][:80]} |")
            continue
        ov = r.get("overlap_rank", {}).get("mean")
        ov16 = r.get("overlap_kernel_fp16", {}).get("mean")
        bw = r["kernel"].get("pct_copy_bw")
        lines.append(
            f"| {r['tokens'] / 1e6:g}M | {r['chunks']:,} | {r['docs']:,} | "
            f"{r['resident_key_bytes'] / 1e9:.2f} GB {r['resident_key_dtype']} | "
            f"{fmt_ms(r['rank'])} | {fmt_ms(r['kernel'])} | "
            f"{'n/a' if bw is None else f'{bw:.0f}%'} | {fmt_ms(r.get('naive'))} | "
            f"{'n/a' if ov is None else f'{ov:.3f}'} | {fmt_ms(r.get('kernel_fp16'))} | "
            f"{'n/a' if ov16 is None else f'{ov16:.3f}'} |"
        )
    return "\n".join(lines)


def plot(json_path: Path, png: Path) -> bool:
    """Latency and overlap against memory size; False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    data = json.loads(Path(json_path).read_text())
    rows = sorted((r for r in data["rows"] if "error" not in r), key=lambda r: r["tokens"])
    if not rows:
        return False
    x = [r["tokens"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    paths = (
        ("rank", "RoutingIndex.rank (fused, fp32 keys)"),
        ("kernel", "route_topk alone"),
        ("kernel_fp16", "route_topk, fp16 keys"),
        ("naive", "plain torch fp32 (naive.py)"),
    )
    for key, label in paths:
        pts = [(xi, r[key]) for xi, r in zip(x, rows) if "p50_ms" in r.get(key, {})]
        if pts:
            xs, parts = zip(*pts)
            a.errorbar(
                xs,
                [p["p50_ms"] for p in parts],
                marker="o",
                label=label,
                yerr=[[0] * len(parts), [p["p95_ms"] - p["p50_ms"] for p in parts]],
            )
    a.set(
        xscale="log",
        yscale="log",
        xlabel="memory (tokens)",
        ylabel="ms per query (p50, bar to p95)",
    )
    a.legend(fontsize=8)
    a.grid(True, which="both", alpha=0.3)
    for key, label in (("overlap_rank", "fused, fp32 keys"), ("overlap_kernel_fp16", "fp16 keys")):
        pts = [(xi, r[key]["mean"]) for xi, r in zip(x, rows) if key in r]
        if pts:
            b.plot(*zip(*pts), marker="o", label=label)
    b.set(
        xscale="log",
        ylim=(0, 1.02),
        xlabel="memory (tokens)",
        ylabel=f"overlap@{rows[0]['k']} with fp32 reference (mean)",
    )
    b.legend(fontsize=8)
    b.grid(True, which="both", alpha=0.3)
    env = data["env"]
    fig.suptitle(
        f"Routing on {env.get('machine', '?')}: model-shaped random keys\n{data['shape_label']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return True


def shape_label(shape: Shape) -> str:
    return (
        f"SmolLM2-135M learned router: {shape.layers} layers x {shape.n_kv_heads} kv heads x "
        f"{shape.head_dim} dims per chunk key, {shape.n_heads} query heads, "
        f"T={shape.query_tokens} query tokens, route_top_tokens={shape.top_tokens}"
    )


def run(
    out: Path,
    sizes: Sequence[int],
    k: int,
    n_queries: int,
    warmup: int,
    query_tokens: int,
    commit: str | None,
    fp16: bool,
    top_tokens: int = 1,
    key_dtypes: Sequence[str] = (),
) -> dict[str, Any]:
    """All sizes on cuda:0; writes ``out/gpu-routing.json`` after each size."""
    _ensure_kernels()
    device = torch.device("cuda")
    shape, router = shipped_shape(query_tokens=query_tokens, top_tokens=top_tokens)
    data: dict[str, Any] = {
        "what": "routing-only latency and top-k agreement; keys and queries are random "
                "vectors of the model's routing shape, not encoded text",
        "shape": asdict(shape), "shape_label": shape_label(shape), "router": router,
        "env": environment(commit), "copy_bw_bytes_per_s": copy_bandwidth(), "rows": [],
    }  # fmt: skip
    print(f"copy bandwidth {data['copy_bw_bytes_per_s'] / 1e12:.2f} TB/s (read + write)",
          flush=True)  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    for tokens in sizes:
        try:
            r = measure_size(
                tokens, shape, k, n_queries, warmup, device, data["copy_bw_bytes_per_s"], fp16,
                key_dtypes=key_dtypes,
            )
        except Exception as e:  # noqa: BLE001 - record the failure, go on with smaller sizes
            r = {"tokens": tokens, "error": repr(e)[:500]}
        data["rows"].append(r)
        print(json.dumps(r), flush=True)
        (out / json_name(top_tokens, key_dtypes)).write_text(json.dumps(data, indent=1))
    return data


def json_name(top_tokens: int, key_dtypes: Sequence[str] = ()) -> str:
    """``gpu-routing.json`` for the paper's rule, ``gpu-routing-top{m}.json`` otherwise;
    ``-keys`` when narrow resident keys were measured too."""
    name = "gpu-routing" if top_tokens == 1 else f"gpu-routing-top{top_tokens}"
    return name + ("-keys" if key_dtypes else "") + ".json"


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench-out")))
    p.add_argument("--plot", type=Path, help="Only plot this JSON (no GPU needed).")
    p.add_argument("--sizes", default=",".join(str(s) for s in SIZES), help="Tokens, commas.")
    p.add_argument("--k", type=int, default=16, help="Documents per query (runtime top_k).")
    p.add_argument("--queries", type=int, default=40, help="Timed queries per size and path.")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--query-tokens", type=int, default=32)
    p.add_argument("--commit", help="Git commit to record (the GPU box has no .git).")
    p.add_argument("--no-fp16", action="store_true", help="Skip the fp16-key kernel row.")
    p.add_argument("--top-tokens", type=int, default=1,
                   help="route_top_tokens: the rule's query side (1 = max over tokens).")
    p.add_argument("--key-dtypes", default="",
                   help="Also rank with resident keys in these dtypes, commas "
                        "(bfloat16,float16,float8: MemoryConfig.routing_key_dtype).")
    a = p.parse_args(argv)
    if a.plot:
        png = a.plot.with_suffix(".png")
        print(f"wrote {png}" if plot(a.plot, png) else "matplotlib missing: no plot")
        return
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU (use --plot JSON to plot existing results)")
    sizes = [int(float(s)) for s in a.sizes.split(",")]
    dts = [d for d in a.key_dtypes.split(",") if d]
    data = run(a.out, sizes, a.k, a.queries, a.warmup, a.query_tokens, a.commit, not a.no_fp16,
               a.top_tokens, dts)
    result = a.out / json_name(a.top_tokens, dts)
    if plot(result, result.with_suffix(".png")):
        print(f"wrote {result.with_suffix('.png')}")
    print(
        f"\n{data['env'].get('machine')}; {data['shape_label']}; k={a.k}; "
        f"times p50 / p95 over {a.queries} queries, all {data['shape']['layers']} layers"
    )
    print(table(sorted(data["rows"], key=lambda r: r["tokens"])))


if __name__ == "__main__":
    main()
