from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

pytest.importorskip("triton")

try:
    from msa_agent.kernels import route_topk
    from msa_agent.kernels.route_topk.naive import route_topk_ref
except ImportError:  # on the GPU box the repo root is on sys.path, the package is not installed
    from kernels import route_topk
    from kernels.route_topk.naive import route_topk_ref

Check = Callable[[torch.Tensor, torch.Tensor, float], None]
DTYPES = [torch.bfloat16, torch.float16, torch.float8_e4m3fn]


def make(B: int, T: int, HQ: int, HKV: int, D: int, N: int, M: int, dt: torch.dtype, dev: str):
    q = torch.randn(B, T, HQ, D, device=dev)
    keys = (torch.randn(N, HKV, D, device=dev) * 2).to(dt)
    doc = torch.sort(torch.randint(0, M, (N,), device=dev)).values
    scale = torch.rand(N, device=dev) + 0.5 if dt == torch.float8_e4m3fn else None
    return q, keys, doc, scale


def run_case(check: Check, B: int, T: int, HQ: int, HKV: int, D: int, N: int, M: int,
             dt: torch.dtype, dev: str, masked: bool, k: int = 8,
             persistent: bool = False) -> None:  # fmt: skip
    q, keys, doc, scale = make(B, T, HQ, HKV, D, N, M, dt, dev)
    mask = torch.rand(M, device=dev) > 0.4 if masked else None
    ids, val, cs = route_topk(q, keys, doc, M, k, doc_mask=mask, key_scale=scale,
                              return_chunk_scores=True, persistent=persistent)  # fmt: skip
    rids, rval, rcs = route_topk_ref(q, keys, doc, M, k, mask, scale)
    check(cs, rcs, 5e-3)
    fin = torch.isfinite(rval)
    assert torch.equal(fin, torch.isfinite(val)) and torch.equal(ids == -1, ~fin)
    torch.testing.assert_close(val[fin], rval[fin], atol=5e-3, rtol=0)
    if mask is not None:  # masked documents are never returned
        assert not mask[ids[ids >= 0]].logical_not().any()
    # each returned id's reference score equals the returned score
    ref_doc = torch.full((B, M), float("-inf"), device=dev).scatter_reduce(
        1, doc.long()[None].expand(B, -1), rcs, "amax")
    got = ref_doc.gather(1, ids.clamp_min(0))[fin]
    torch.testing.assert_close(got, val[fin], atol=5e-3, rtol=0)


@pytest.mark.parametrize("dt", DTYPES, ids=str)
@pytest.mark.parametrize("masked", [False, True])
def test_route_topk_interpret(assert_rms: Check, dt: torch.dtype, masked: bool) -> None:
    torch.manual_seed(0)
    run_case(assert_rms, 1, 63, 8, 2, 100, 37, 11, dt, "cpu", masked)


@pytest.mark.parametrize("persistent", [False, True])
def test_route_topk_batched_interpret(assert_rms: Check, persistent: bool) -> None:
    torch.manual_seed(1)
    run_case(assert_rms, 3, 5, 4, 2, 32, 45, 20, torch.bfloat16, "cpu", True, 8, persistent)


def test_route_topk_fewer_docs_than_k() -> None:
    torch.manual_seed(2)
    q, keys, doc, _ = make(1, 4, 4, 1, 16, 20, 5, torch.bfloat16, "cpu")
    mask = torch.tensor([True, False, True, False, False])
    ids, val = route_topk(q[0], keys, doc, 5, 4, doc_mask=mask)
    assert ids.shape == (4,) and set(ids[2:].tolist()) == {-1}
    assert torch.isinf(val[2:]).all() and set(ids[:2].tolist()) == {0, 2}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dt", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1, 64, 32, 8, 128, 5003, 97), (4, 63, 16, 4, 100, 2049, 300)])
@pytest.mark.parametrize("persistent", [False, True])
def test_route_topk_gpu(
    assert_rms: Check, dt: torch.dtype, shape: tuple[int, ...], persistent: bool
) -> None:
    torch.manual_seed(3)
    run_case(assert_rms, *shape, dt, "cuda", True, 16, persistent)


def normalized_fp8(N: int, HKV: int, D: int, dev: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit keys per (chunk, kv head), stored as e4m3 with a per-chunk scale."""
    k = torch.nn.functional.normalize(torch.randn(N, HKV, D, device=dev), dim=-1)
    scale = k.abs().amax((1, 2)) / 448
    return (k / scale[:, None, None]).to(torch.float8_e4m3fn), scale


@pytest.mark.parametrize("fp8_dot", [False, True])
def test_route_topk_normalized_fp8_interpret(assert_rms: Check, fp8_dot: bool) -> None:
    torch.manual_seed(4)
    q = torch.randn(2, 7, 8, 64)
    keys, scale = normalized_fp8(50, 2, 64, "cpu")
    doc = torch.arange(50) // 3
    mask = torch.rand(17) > 0.3
    ids, val, cs = route_topk(q, keys, doc, 17, 5, doc_mask=mask, key_scale=scale,
                              keys_normalized=True, fp8_dot=fp8_dot, return_chunk_scores=True)
    _, _, rcs = route_topk_ref(q, keys, doc, 17, 5, mask, scale, keys_normalized=True)
    assert_rms(cs, rcs, 3e-2 if fp8_dot else 5e-3)
    assert mask[ids[ids >= 0]].all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("fp8_dot", [False, True])
def test_route_topk_normalized_fp8_gpu(assert_rms: Check, fp8_dot: bool) -> None:
    torch.manual_seed(5)
    q = torch.randn(3, 64, 32, 128, device="cuda")
    keys, scale = normalized_fp8(4099, 8, 128, "cuda")
    doc = torch.arange(4099, device="cuda") // 7
    ids, val, cs = route_topk(q, keys, doc, 586, 16, key_scale=scale, keys_normalized=True,
                              fp8_dot=fp8_dot, return_chunk_scores=True)  # fmt: skip
    _, _, rcs = route_topk_ref(q, keys, doc, 586, 16, None, scale, keys_normalized=True)
    assert_rms(cs, rcs, 3e-2 if fp8_dot else 5e-3)
