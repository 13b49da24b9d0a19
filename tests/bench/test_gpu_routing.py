"""The GPU routing benchmark's core at a tiny size on CPU (the fused kernel runs under the Triton
interpreter, set by the root conftest), and its agreement arithmetic on hand-made rankings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from msa_agent.bench import gpu_routing as gr

pytest.importorskip("triton")

TINY = gr.Shape(layers=2, doc_tokens=256, query_tokens=3, masked_every=3)


def test_overlap_identical_is_one() -> None:
    assert gr.overlap_at_k([4, 1, 7, 9], [4, 1, 7, 9], 4) == 1.0
    assert gr.overlap_at_k([9, 7, 1, 4], [4, 1, 7, 9], 4) == 1.0  # a set: order is free


def test_overlap_partial_fraction() -> None:
    assert gr.overlap_at_k([1, 2, 3, 4], [1, 2, 5, 6], 4) == 0.5
    assert gr.overlap_at_k([1, 8, 9, 10], [1, 2, 3, 4], 4) == 0.25
    assert gr.overlap_at_k([5, 6, 7], [1, 2, 3], 3) == 0.0
    # only the first k of each count: 3 is 4th in got, so it is out at k = 3
    assert gr.overlap_at_k([1, 2, 9, 3], [1, 2, 3, 4], 3) == pytest.approx(2 / 3)


def test_overlap_fewer_valid_than_k() -> None:
    assert gr.overlap_at_k([3, 1], [1, 3], 16) == 1.0
    assert gr.overlap_at_k([3], [1, 3], 16) == 0.5


def test_agreement_over_queries() -> None:
    a = gr.agreement([[1, 2, 3, 4], [1, 2, 3, 4]], [[1, 2, 3, 4], [1, 2, 7, 8]], 4)
    assert a == {"mean": 0.75, "min": 0.5, "identical_sets": 0.5}


def test_percentiles() -> None:
    v = [float(i) for i in range(1, 21)]  # 1..20
    assert gr.pct(v, 50) == 10.5
    assert gr.pct(v, 95) == pytest.approx(19.05)
    assert gr.pct([3.0], 95) == 3.0


def test_shipped_router_shape() -> None:
    shape, router = gr.shipped_shape()
    assert (shape.layers, shape.n_heads, shape.n_kv_heads, shape.head_dim) == (15, 9, 3, 64)
    assert router["msa_layers"] == list(range(15, 30))
    assert shape.key_elems == 2880


def test_measure_size_cpu_fused_matches_reference(tmp_path: Path) -> None:
    tokens = 6 * TINY.doc_tokens + 64  # 6 whole documents of 4 chunks and one of 1 chunk
    row = gr.measure_size(tokens, TINY, k=3, n_queries=3, warmup=1, device=torch.device("cpu"))
    assert (row["chunks"], row["docs"], row["docs_masked_out"]) == (25, 7, 2)
    assert row["resident_key_dtype"] == "float32"
    assert row["resident_key_bytes"] == 25 * TINY.key_elems * 4
    for path in ("rank", "kernel", "naive", "kernel_fp16"):
        assert row[path]["n"] == 3 and row[path]["p95_ms"] >= row[path]["p50_ms"] > 0
    # the fused kernel (interpreter, fp32 dot) and the fp32 rule pick the same documents
    assert row["overlap_rank"]["mean"] == 1.0 and row["overlap_kernel"]["mean"] == 1.0
    assert 0.0 <= row["overlap_kernel_fp16"]["mean"] <= 1.0
    data = {"rows": [row], "env": {"machine": "cpu"}, "shape_label": gr.shape_label(TINY)}
    (tmp_path / "r.json").write_text(json.dumps(data))
    lines = gr.table([row]).splitlines()
    assert len(lines) == 3 and lines[2].startswith("| 0.0016M | 25 | 7 |")
    assert lines[0].count("|") == lines[1].count("|") == lines[2].count("|")
    if gr.plot(tmp_path / "r.json", tmp_path / "r.png"):
        assert (tmp_path / "r.png").stat().st_size > 0


@pytest.mark.gpu
def test_measure_size_gpu_one_million() -> None:
    shape, _ = gr.shipped_shape()
    row = gr.measure_size(1_000_000, shape, k=16, n_queries=5, warmup=2,
                          device=torch.device("cuda"))  # fmt: skip
    assert row["overlap_rank"]["mean"] >= 0.5  # a broken kernel gives ~0.07
    assert row["docs"] == 245 and row["docs_masked_out"] == 24


def test_table_marks_a_failed_size() -> None:
    lines = gr.table([{"tokens": 100_000_000, "error": "OutOfMemoryError()"}]).splitlines()
    assert lines[2] == "| 100M | failed: OutOfMemoryError() |"


def test_measure_size_narrow_resident_keys() -> None:
    """``--key-dtypes``: the runtime's rank over bf16 / fp8 resident keys, timed and compared
    with the fp32 reference; a quarter or half of the key bytes."""
    tokens = 6 * TINY.doc_tokens + 64
    row = gr.measure_size(tokens, TINY, k=3, n_queries=3, warmup=1, device=torch.device("cpu"),
                          fp16=False, key_dtypes=("bfloat16", "float8"))
    full = row["resident_key_bytes"]
    assert row["rank_bfloat16"]["key_bytes"] == full // 2
    assert row["rank_float8"]["key_bytes"] == full // 4 + 25 * 4  # + one fp32 scale a chunk
    for dt in ("bfloat16", "float8"):
        part = row[f"rank_{dt}"]
        assert part["n"] == 3 and part["p95_ms"] >= part["p50_ms"] > 0
        assert 0.5 <= part["overlap"]["mean"] <= 1.0  # 3 of 7 random documents: near-ties rare
