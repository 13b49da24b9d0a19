from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

try:
    from msa_agent.kernels import gather_to_device
except ImportError:  # on the GPU box the repo root is on sys.path, the package is not installed
    from kernels import gather_to_device


@pytest.mark.parametrize(
    "shape,dt",
    [((13, 3, 100), torch.bfloat16), ((9, 7), torch.uint8), ((17, 2, 5000), torch.float32)],
)
def test_gather_interpret(shape: tuple[int, ...], dt: torch.dtype) -> None:
    src = (torch.randn(shape) * 50).to(dt)
    idx = torch.tensor([4, 0, 8, 4, 2])
    out = gather_to_device(src, idx, "cpu")
    assert torch.equal(out, src[idx])


def test_gather_empty() -> None:
    src = torch.randn(5, 8)
    assert gather_to_device(src, torch.zeros(0, dtype=torch.long), "cpu").shape == (0, 8)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("row_kib", [16, 100, 256])
def test_gather_pinned_gpu(row_kib: int) -> None:
    src = torch.randn(64, row_kib * 256).pin_memory()
    idx = torch.randint(0, 64, (40,))
    out = gather_to_device(src, idx, "cuda")
    assert out.is_cuda and torch.equal(out.cpu(), src[idx])
