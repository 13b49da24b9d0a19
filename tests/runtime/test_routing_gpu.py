"""On CUDA the routing index uses the fused Triton route_topk; it must rank as the torch path."""

from __future__ import annotations

import pytest
import torch

from msa_agent.runtime.routing import RoutingIndex

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("weighted", [False, True])
def test_fused_rank_equals_cpu_rank(weighted: bool) -> None:
    """``weighted``: a router's learned layer weights (in the resident rows)."""
    gen = torch.Generator().manual_seed(0)
    weight = torch.linspace(0.5, 1.5, 15) if weighted else None
    docs = [torch.randn(int(torch.randint(1, 9, (1,), generator=gen)), 15, 3, 64, generator=gen)
            for _ in range(3000)]
    ids = [f"m{i}" for i in range(len(docs))]
    spaces = ["a" if i % 3 else "b" for i in range(len(docs))]
    q = torch.randn(12, 15, 9, 64, generator=gen)
    cpu, gpu = (RoutingIndex(d, layer_weight=weight) for d in ("cpu", "cuda"))
    assert gpu.use_kernel
    for index in (cpu, gpu):
        index.add(ids, spaces, docs)
    every = cpu.rank(q, len(docs), cpu.mask_for("a"), "heads")
    exact = dict(zip(every.docs, every.scores))
    got = gpu.rank(q, 16, gpu.mask_for("a"), "heads")
    kth = every.scores[15]
    # the kernel's dot runs in tf32: near-ties may swap, nothing else may change
    assert len(got.docs) == 16 and all(spaces[d] == "a" for d in got.docs)
    for d, s in zip(got.docs, got.scores):
        assert abs(s - exact[d]) < 2e-3
        assert exact[d] >= kth - 4e-3
    assert got.scores == sorted(got.scores, reverse=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_rank_many_equals_rank() -> None:
    """Queries of mixed lengths in one ``route_topk`` pass (``q_len``): each row is that
    query's own ``rank`` (a near-tie within 1e-5 may swap if the two calls' tiles differ)."""
    gen = torch.Generator().manual_seed(1)
    docs = [torch.randn(int(torch.randint(1, 9, (1,), generator=gen)), 15, 3, 64, generator=gen)
            for _ in range(3000)]
    spaces = ["a" if i % 3 else "b" for i in range(len(docs))]
    qs = [torch.randn(t, 15, 9, 64, generator=gen) for t in (12, 3, 30, 1, 7)]
    for key_dtype in ("float32", "float8"):
        gpu = RoutingIndex("cuda", key_dtype=key_dtype)
        gpu.add([f"m{i}" for i in range(len(docs))], spaces, docs)
        mask = gpu.mask_for("a")
        for q, got in zip(qs, gpu.rank_many(qs, 16, mask)):
            want = gpu.rank(q, 16, mask)
            assert len(got.docs) == 16 and all(spaces[d] == "a" for d in got.docs)
            torch.testing.assert_close(torch.tensor(got.scores), torch.tensor(want.scores),
                                       atol=1e-5, rtol=0)  # fmt: skip
            for i, (g, w) in enumerate(zip(got.docs, want.docs)):
                assert g == w or abs(got.scores[i] - want.scores[i]) < 1e-5
            if got.docs == want.docs:
                assert got.best_chunk == want.best_chunk
