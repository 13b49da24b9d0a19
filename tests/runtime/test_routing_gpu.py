"""On CUDA the routing index uses the fused Triton route_topk; it must rank as the torch path."""

from __future__ import annotations

import pytest
import torch

from msa_agent.runtime.routing import RoutingIndex

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_rank_equals_cpu_rank() -> None:
    gen = torch.Generator().manual_seed(0)
    docs = [torch.randn(int(torch.randint(1, 9, (1,), generator=gen)), 15, 3, 64, generator=gen)
            for _ in range(3000)]
    ids = [f"m{i}" for i in range(len(docs))]
    spaces = ["a" if i % 3 else "b" for i in range(len(docs))]
    q = torch.randn(12, 15, 9, 64, generator=gen)
    cpu, gpu = RoutingIndex("cpu"), RoutingIndex("cuda")
    for index in (cpu, gpu):
        index.add(ids, spaces, docs)
    want = cpu.rank(q, 16, cpu.mask_for("a"), "heads")
    got = gpu.rank(q, 16, gpu.mask_for("a"), "heads")
    assert got.docs == want.docs
    torch.testing.assert_close(torch.tensor(got.scores), torch.tensor(want.scores),
                               atol=1e-4, rtol=1e-4)
