from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

pytest.importorskip("triton")

try:
    from msa_agent.kernels import memory_attention
    from msa_agent.kernels.memory_attention.naive import memory_attention_ref
except ImportError:  # on the GPU box the repo root is on sys.path, the package is not installed
    from kernels import memory_attention
    from kernels.memory_attention.naive import memory_attention_ref

Check = Callable[[torch.Tensor, torch.Tensor, float], None]
TOL = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 2e-2}


def run_case(
    check: Check,
    shape: tuple[int, ...],
    dt: torch.dtype,
    dev: str,
    pooled: bool = False,
    ragged: bool = True,
    num_splits: int | None = None,
    strided: bool = False,
) -> None:
    T, TK, HQ, HKV, D, P, PAGE, L = shape
    if strided:  # as attention passes them: [H, T, D] transposed, and a D slice of wider rows
        q = torch.randn(HQ, T, D, device=dev).to(dt).transpose(0, 1)
        kl = torch.randn(HKV, TK, D, device=dev).to(dt).transpose(0, 1)
        vl = torch.randn(TK, HKV, D + 8, device=dev).to(dt)[..., :D]
        assert not (kl.is_contiguous() or vl.is_contiguous())  # q too when T > 1
    else:
        q = torch.randn(T, HQ, D, device=dev).to(dt)
        kl, vl = (torch.randn(TK, HKV, D, device=dev).to(dt) for _ in range(2))
    pool = (P, HKV, D) if pooled else (P, PAGE, HKV, D)
    kp, vp = (torch.randn(pool, device=dev).to(dt) for _ in range(2))
    idx = torch.randperm(P, device=dev)[:L]
    plen = torch.randint(1, PAGE + 1, (L,), device=dev) if ragged and not pooled else None
    out = memory_attention(q, kl, vl, kp, vp, idx, 0.1, page_len=plen, num_splits=num_splits)
    if pooled:
        kp, vp = kp.unsqueeze(1), vp.unsqueeze(1)
    ref = memory_attention_ref(q.double(), kl.double(), vl.double(), kp.double(), vp.double(),
                               idx, 0.1, plen)  # fmt: skip
    check(out, ref, TOL[dt])


@pytest.mark.parametrize("dt", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("splits", [1, 3])
def test_prefill_interpret(assert_rms: Check, dt: torch.dtype, splits: int) -> None:
    torch.manual_seed(0)
    run_case(assert_rms, (21, 21, 4, 2, 100, 11, 5, 4), dt, "cpu", num_splits=splits)


@pytest.mark.parametrize("shape", [(21, 21, 4, 2, 100, 11, 5, 4), (1, 37, 8, 2, 64, 9, 16, 5)])
def test_strided_local_interpret(assert_rms: Check, shape: tuple[int, ...]) -> None:
    """q / k_local / v_local read through their strides (no packing copy) match the reference."""
    torch.manual_seed(4)
    run_case(assert_rms, shape, torch.float16, "cpu", strided=True)


def test_unit_last_keeps_views() -> None:
    """Only a tensor whose last dim is not unit-stride is packed before the kernel."""
    try:
        from msa_agent.kernels.memory_attention import _unit_last
    except ImportError:
        from kernels.memory_attention import _unit_last
    view = torch.randn(4, 6, 8).transpose(0, 1)
    assert _unit_last(view) is view
    odd = torch.randn(8, 6).t()
    packed = _unit_last(odd)
    assert packed.is_contiguous() and torch.equal(packed, odd)


def test_decode_interpret(assert_rms: Check) -> None:
    torch.manual_seed(1)
    run_case(assert_rms, (1, 37, 8, 2, 64, 9, 16, 5), torch.bfloat16, "cpu")


def test_pooled_interpret(assert_rms: Check) -> None:
    torch.manual_seed(2)
    run_case(assert_rms, (5, 9, 4, 1, 32, 40, 1, 23), torch.float16, "cpu", pooled=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dt", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize(
    "shape",
    [(1, 300, 32, 8, 128, 400, 64, 150), (63, 63, 12, 4, 100, 97, 64, 33),
     (257, 300, 32, 8, 128, 100, 64, 40)],
)  # fmt: skip
def test_memory_attention_gpu(assert_rms: Check, dt: torch.dtype, shape: tuple[int, ...]) -> None:
    """Every case after a shape's first launch takes the tuned config directly
    (``parallel._launch``, not the autotuner); both must match the reference."""
    torch.manual_seed(3)
    run_case(assert_rms, shape, dt, "cuda")
    run_case(assert_rms, shape, dt, "cuda", ragged=False)
    run_case(assert_rms, shape, dt, "cuda", strided=True)
    run_case(assert_rms, shape, dt, "cuda")
