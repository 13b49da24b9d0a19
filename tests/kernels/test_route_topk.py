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
             persistent: bool = False, top_tokens: int = 1,
             lengths: list[int] | None = None) -> None:  # fmt: skip
    """``lengths``: a padded batch, query b's tokens past ``lengths[b]`` garbage (``q_len``)."""
    q, keys, doc, scale = make(B, T, HQ, HKV, D, N, M, dt, dev)
    q_len = None if lengths is None else torch.tensor(lengths, device=dev)
    if q_len is not None:
        q = pad_garbage(q, q_len)
    mask = torch.rand(M, device=dev) > 0.4 if masked else None
    ids, val, cs = route_topk(q, keys, doc, M, k, doc_mask=mask, key_scale=scale,
                              return_chunk_scores=True, persistent=persistent,
                              top_tokens=top_tokens, q_len=q_len)  # fmt: skip
    rids, rval, rcs = route_topk_ref(q, keys, doc, M, k, mask, scale, top_tokens=top_tokens,
                                     q_len=q_len)  # fmt: skip
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


def pad_garbage(q: torch.Tensor, q_len: torch.Tensor) -> torch.Tensor:
    """``q`` `[B, T, ...]` with the tokens at ``t >= q_len[b]`` replaced by large values (and
    one NaN): padding must not count, whatever it holds."""
    pad = torch.arange(q.shape[1], device=q.device)[None] >= q_len[:, None]  # [B, T]
    q = torch.where(pad[..., None, None], torch.randn_like(q) * 100, q)
    if pad.any():
        q[pad.nonzero()[0].unbind()] = float("nan")
    return q


@pytest.mark.parametrize("dt", DTYPES, ids=str)
@pytest.mark.parametrize("masked", [False, True])
def test_route_topk_interpret(assert_rms: Check, dt: torch.dtype, masked: bool) -> None:
    torch.manual_seed(0)
    run_case(assert_rms, 1, 63, 8, 2, 100, 37, 11, dt, "cpu", masked)


@pytest.mark.parametrize("persistent", [False, True])
def test_route_topk_batched_interpret(assert_rms: Check, persistent: bool) -> None:
    torch.manual_seed(1)
    run_case(assert_rms, 3, 5, 4, 2, 32, 45, 20, torch.bfloat16, "cpu", True, 8, persistent)


@pytest.mark.parametrize(("T", "top"), [(63, 3), (5, 2), (2, 3)])
@pytest.mark.parametrize("persistent", [False, True])
def test_route_topk_top_tokens_interpret(assert_rms: Check, T: int, top: int,
                                         persistent: bool) -> None:  # fmt: skip
    """The mean of the best ``top`` query tokens (fewer tokens than ``top``: all of them)."""
    torch.manual_seed(2)
    run_case(assert_rms, 3, T, 4, 2, 32, 45, 20, torch.bfloat16, "cpu", True, 8, persistent,
             top)


@pytest.mark.parametrize("dt", [torch.float32, *DTYPES], ids=str)
@pytest.mark.parametrize("top", [1, 2])
@pytest.mark.parametrize("persistent", [False, True])
def test_route_topk_q_len_interpret(assert_rms: Check, dt: torch.dtype, top: int,
                                    persistent: bool) -> None:  # fmt: skip
    """A padded batch of mixed lengths (one query shorter than ``top``, one of one token):
    the kernel equals the reference with ``q_len``; padding never counts."""
    torch.manual_seed(15)
    run_case(assert_rms, 4, 9, 4, 2, 32, 45, 20, dt, "cpu", True, 8, persistent, top,
             [9, 3, 1, 6])


@pytest.mark.parametrize("top", [1, 2])
def test_naive_q_len_is_each_query_alone(top: int) -> None:
    """The reference with ``q_len`` ranks each row as its unpadded query alone."""
    torch.manual_seed(16)
    q, keys, doc, _ = make(3, 7, 4, 2, 16, 30, 9, torch.float32, "cpu")
    q_len = torch.tensor([7, 2, 4])
    mask = torch.rand(9) > 0.3
    ids, val, cs = route_topk_ref(pad_garbage(q, q_len), keys, doc, 9, 5, mask,
                                  top_tokens=top, q_len=q_len)  # fmt: skip
    for b, t in enumerate(q_len.tolist()):
        aids, aval, acs = route_topk_ref(q[b : b + 1, :t], keys, doc, 9, 5, mask, top_tokens=top)
        assert torch.equal(aids[0], ids[b])
        torch.testing.assert_close(acs[0], cs[b], atol=1e-6, rtol=0)
        torch.testing.assert_close(aval[0], val[b], atol=1e-6, rtol=0)


@pytest.mark.parametrize("keys_kind", ["bf16", "fp8_normalized"])
@pytest.mark.parametrize("top", [1, 2])
@pytest.mark.parametrize("persistent", [False, True])
def test_route_topk_q_len_row_equals_alone_interpret(keys_kind: str, top: int,
                                                     persistent: bool) -> None:  # fmt: skip
    """Each row of a padded batch (one pass over the keys) equals its query ranked alone,
    unpadded: same ids, scores to 1e-6 (the runtime's ``RoutingIndex.rank_many``)."""
    torch.manual_seed(17)
    N, M = 61, 23
    doc = torch.sort(torch.randint(0, M, (N,))).values
    mask = torch.rand(M) > 0.2
    norm = keys_kind == "fp8_normalized"
    keys, scale = normalized_fp8(N, 2, 32, "cpu") if norm else \
        ((torch.randn(N, 2, 32) * 2).to(torch.bfloat16), None)
    q_len = torch.tensor([5, 12, 1, 3])
    q = pad_garbage(torch.randn(4, 12, 6, 32), q_len)
    kw = {"doc_mask": mask, "key_scale": scale, "keys_normalized": norm, "top_tokens": top,
          "persistent": persistent, "return_chunk_scores": True}
    ids, val, cs = route_topk(q, keys, doc, M, 7, q_len=q_len, **kw)
    for b, t in enumerate(q_len.tolist()):
        aids, aval, acs = route_topk(q[b : b + 1, :t], keys, doc, M, 7, **kw)
        assert torch.equal(aids[0], ids[b])
        torch.testing.assert_close(aval[0], val[b], atol=1e-6, rtol=0)
        torch.testing.assert_close(acs[0], cs[b], atol=1e-6, rtol=0)


@pytest.mark.parametrize("top", [1, 2])
def test_route_topk_q_len_empty_query_interpret(top: int) -> None:
    """A query of no real token selects nothing (ids -1, scores -inf), as the reference;
    ``q_len`` must be ``[B]`` of batched queries."""
    torch.manual_seed(18)
    q, keys, doc, _ = make(2, 4, 4, 2, 16, 20, 6, torch.bfloat16, "cpu")
    q_len = torch.tensor([0, 4])
    for fn in (route_topk, route_topk_ref):
        ids, val = fn(q, keys, doc, 6, 3, top_tokens=top, q_len=q_len)[:2]
        assert (ids[0] == -1).all() and torch.isinf(val[0]).all() and (ids[1] >= 0).all()
    with pytest.raises(ValueError, match="q_len"):
        route_topk(q[0], keys, doc, 6, 3, q_len=torch.tensor([4]))


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
@pytest.mark.parametrize("top", [1, 2])
def test_route_topk_gpu(
    assert_rms: Check, dt: torch.dtype, shape: tuple[int, ...], persistent: bool, top: int
) -> None:
    torch.manual_seed(3)
    run_case(assert_rms, *shape, dt, "cuda", True, 16, persistent, top)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dt", DTYPES, ids=str)
@pytest.mark.parametrize("persistent", [False, True])
@pytest.mark.parametrize("top", [1, 2])
def test_route_topk_q_len_gpu(assert_rms: Check, dt: torch.dtype, persistent: bool,
                              top: int) -> None:  # fmt: skip
    """Padded batches of mixed lengths (``q_len``), two column tiles (8 x 64 columns)."""
    torch.manual_seed(19)
    run_case(assert_rms, 8, 63, 16, 4, 100, 2049, 300, dt, "cuda", True, 16, persistent, top,
             [63, 1, 17, 40, 2, 63, 9, 33])


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


def check_against_ref(check: Check, q: torch.Tensor, keys: torch.Tensor, doc: torch.Tensor,
                      M: int, k: int, mask: torch.Tensor | None, scale: torch.Tensor | None,
                      tol: float, **kw: bool) -> None:  # fmt: skip
    """Chunk scores vs the reference; each returned doc's reference score is its max chunk."""
    ids, val, cs = route_topk(q, keys, doc, M, k, doc_mask=mask, key_scale=scale,
                              return_chunk_scores=True, **kw)  # fmt: skip
    norm = kw.get("keys_normalized", False)
    _, rval, rcs = route_topk_ref(q, keys, doc, M, k, mask, scale, keys_normalized=norm)
    check(cs, rcs, tol)
    fin = torch.isfinite(val)
    assert torch.equal(fin, torch.isfinite(rval)) and torch.equal(ids == -1, ~fin)
    if mask is not None:
        assert mask[ids[fin]].all()
    # the kernel's document score is the max of its own chunk scores (run reduction exact)
    own = torch.full((q.shape[0], M), float("-inf"), device=cs.device).scatter_reduce(
        1, doc.long()[None].expand(q.shape[0], -1), cs, "amax")
    torch.testing.assert_close(own.gather(1, ids.clamp_min(0))[fin], val[fin], atol=0, rtol=0)


KNOBS = {  # bench knobs: each non-default path must stay exact
    "no_pre_reduce": ("MSA_ROUTE_PRE_REDUCE", "0"), "acq_rel": ("MSA_ROUTE_RELAXED", "0"),
    "scale_a_on": ("MSA_ROUTE_SCALE_A", "1"), "scale_a_off": ("MSA_ROUTE_SCALE_A", "0"),
    "torch_topk": ("MSA_ROUTE_TRITON_TOPK", "0"), "cols128": ("MSA_ROUTE_BATCH_COLS", "128"),
}


@pytest.mark.parametrize("persistent", [False, True])
@pytest.mark.parametrize("knobs", ["default", *KNOBS])
def test_route_topk_unsorted_docs_interpret(assert_rms: Check, monkeypatch: pytest.MonkeyPatch,
                                            persistent: bool, knobs: str) -> None:  # fmt: skip
    """Documents interleaved (not contiguous runs), runs crossing blocks, single-chunk docs;
    two column tiles (B * 64 columns > 128); each env knob of the bench off in turn."""
    if knobs in KNOBS:
        monkeypatch.setenv(*KNOBS[knobs])
    torch.manual_seed(6)
    N, M = 53, 9
    q = torch.randn(3, 64, 4, 32)
    keys = torch.randn(N, 2, 32).to(torch.bfloat16)
    doc = torch.cat([torch.full((20,), 3), torch.randint(0, M, (25,)), torch.arange(8)])
    check_against_ref(assert_rms, q, keys, doc, M, 6, torch.rand(M) > 0.3, None, 5e-3,
                      persistent=persistent)  # fmt: skip


@pytest.mark.parametrize("dt", [torch.bfloat16, torch.float8_e4m3fn], ids=str)
@pytest.mark.parametrize("persistent", [False, True])
def test_route_topk_normalized_odd_d_interpret(assert_rms: Check, dt: torch.dtype,
                                               persistent: bool) -> None:  # fmt: skip
    """Flat reduction tiles that cross kv heads and end part-way (HKV * D = 300, BK = 32)."""
    torch.manual_seed(7)
    N, M = 41, 6
    k = torch.nn.functional.normalize(torch.randn(N, 3, 100), dim=-1)
    scale = None
    if dt == torch.float8_e4m3fn:
        scale = k.abs().amax((1, 2)) / 448
        k = k / scale[:, None, None]
    q = torch.randn(2, 5, 6, 100)
    doc = torch.sort(torch.randint(0, M, (N,))).values
    check_against_ref(assert_rms, q, k.to(dt), doc, M, 4, None, scale, 5e-3,
                      keys_normalized=True, persistent=persistent)  # fmt: skip


def test_route_topk_fp8_dot_norms_on_the_fly_interpret(assert_rms: Check) -> None:
    """fp8 dot without pre-normalised keys: per-head norms, per-column query scale."""
    torch.manual_seed(8)
    q, keys, doc, _ = make(2, 9, 8, 2, 64, 70, 13, torch.float8_e4m3fn, "cpu")
    check_against_ref(assert_rms, q, keys, doc, 13, 5, torch.rand(13) > 0.2, None, 3e-2,
                      fp8_dot=True, persistent=True)  # fmt: skip


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("knobs", ["default", *KNOBS])
@pytest.mark.parametrize("B", [1, 5])
def test_route_topk_unsorted_docs_gpu(assert_rms: Check, monkeypatch: pytest.MonkeyPatch,
                                      knobs: str, B: int) -> None:  # fmt: skip
    if knobs in KNOBS:
        monkeypatch.setenv(*KNOBS[knobs])
    torch.manual_seed(9)
    N, M = 7001, 301
    q = torch.randn(B, 64, 32, 128, device="cuda")
    keys, scale = normalized_fp8(N, 8, 128, "cuda")
    doc = torch.sort(torch.randint(0, M, (N,), device="cuda")).values
    doc[3000:3500] = torch.randint(0, M, (500,), device="cuda")  # interleaved stretch
    mask = torch.rand(M, device="cuda") > 0.1
    for fp8_dot in (False, True):
        check_against_ref(assert_rms, q, keys, doc, M, 16, mask, scale,
                          3e-2 if fp8_dot else 5e-3, keys_normalized=True,
                          fp8_dot=fp8_dot)  # fmt: skip
    # norms on the fly, bf16 keys of any norm (the scaled-A path)
    raw = (torch.randn(N, 8, 128, device="cuda") * 3).to(torch.bfloat16)
    check_against_ref(assert_rms, q, raw, doc, M, 16, mask, None, 5e-3)


def assert_topk_case(B: int, M: int, k: int, dev: str) -> None:
    """Triton top-k vs torch: same values; ids unique and pointing at those values."""
    try:
        from msa_agent.kernels.route_topk.naive import topk_docs
        from msa_agent.kernels.route_topk.topk import topk_plan, topk_triton
    except ImportError:
        from kernels.route_topk.naive import topk_docs
        from kernels.route_topk.topk import topk_plan, topk_triton
    s = torch.randn(B, M, device=dev).round(decimals=1)  # many ties
    s[0, torch.rand(M, device=dev) > 0.3] = float("-inf")
    if B > 1:
        s[1] = float("-inf")  # no valid document at all
        s[1, 7] = 0.5
    plan = topk_plan(M, k)
    assert plan is not None
    counter = torch.zeros(B, dtype=torch.int32, device=dev)
    ids, val = topk_triton(s, k, counter, plan)
    rids, rval = topk_docs(s, k)
    assert ids.shape == (B, k) and ids.dtype == torch.int64
    torch.testing.assert_close(val, rval, atol=0, rtol=0)
    assert torch.equal(ids == -1, rids == -1)
    fin = ids >= 0
    assert torch.equal(s.gather(1, ids.clamp_min(0))[fin], val[fin])
    for b in range(B):
        got = ids[b][fin[b]].tolist()
        assert len(set(got)) == len(got)
    assert not counter.any()  # left at zero for the next call


@pytest.mark.parametrize("k", [1, 16, 33])
def test_topk_triton_interpret(k: int) -> None:
    torch.manual_seed(10)
    assert_topk_case(2, 3001, k, "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("M,k", [(24_414, 16), (1_000_003, 16), (777, 64), (100, 5)])
def test_topk_triton_gpu(M: int, k: int) -> None:
    torch.manual_seed(11)
    for _ in range(3):  # repeated calls reuse the counter protocol
        assert_topk_case(3, M, k, "cuda")


def literal_chunk_scores(q: torch.Tensor, keys: torch.Tensor, key_scale: torch.Tensor | None,
                         keys_normalized: bool, top: int = 1) -> torch.Tensor:  # fmt: skip
    """The paper's formula as written, max_t mean_h cos, through a `[B, N, T, HQ]` tensor;
    ``top`` > 1: the mean of the best ``top`` tokens, by sorting."""
    k = keys.float() if key_scale is None else keys.float() * key_scale.float()[:, None, None]
    q_hat = q.float() / q.float().norm(dim=-1, keepdim=True).clamp_min(1e-6)
    k_hat = k if keys_normalized else k / k.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    k_hat = k_hat.repeat_interleave(q.shape[2] // keys.shape[1], dim=1)  # (N, HQ, D)
    per_token = torch.einsum("bthd,nhd->bnth", q_hat, k_hat).mean(-1)  # [B, N, T]
    return per_token.sort(-1, descending=True).values[..., :top].mean(-1)


@pytest.mark.parametrize("normalized", [False, True])
def test_naive_rule_is_the_literal_formula(normalized: bool) -> None:
    """naive.py's folded, blocked form (the one definition) equals max_t mean_h cos."""
    try:
        from msa_agent.kernels.route_topk import naive
    except ImportError:
        from kernels.route_topk import naive
    torch.manual_seed(12)
    q, keys, _, _ = make(3, 63, 6, 2, 100, 37, 5, torch.float32, "cpu")
    scale = torch.rand(37) + 0.5
    if normalized:
        keys = naive.unit(keys) / scale[:, None, None]
    want = literal_chunk_scores(q, keys, scale, normalized)
    got = naive.chunk_scores_ref(q, keys, scale, normalized)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    # blocks of 8 chunks and padded query tokens (as the training loss calls it)
    qf = naive.fold_queries(q, 2).flatten(2)[:, :, None, None]  # [B, T, 1, 1, HKV*D]
    k_hat = naive.unit(keys.float() * scale[:, None, None]).flatten(1)[:, None, None]
    mask = torch.arange(63)[None] < torch.tensor([63, 10, 1])[:, None]
    blocked = naive.chunk_scores(qf, k_hat, mask, block=8)[:, 0]
    for b, t in enumerate([63, 10, 1]):
        ref = literal_chunk_scores(q[b : b + 1, :t], keys, scale, normalized)[0]
        torch.testing.assert_close(blocked[b], ref, atol=1e-5, rtol=0)


def test_naive_top_tokens_is_the_mean_of_the_best_tokens() -> None:
    """top_tokens m: the mean of the m best tokens; padded tokens never count, and a query of
    fewer than m real tokens averages all of them."""
    try:
        from msa_agent.kernels.route_topk import naive
    except ImportError:
        from kernels.route_topk import naive
    torch.manual_seed(14)
    q, keys, _, _ = make(3, 9, 4, 2, 16, 11, 5, torch.float32, "cpu")
    for top in (1, 2, 3):
        torch.testing.assert_close(naive.chunk_scores_ref(q, keys, top_tokens=top),
                                   literal_chunk_scores(q, keys, None, False, top),
                                   atol=1e-5, rtol=0)  # fmt: skip
    qf = naive.fold_queries(q, 2).flatten(2)[:, :, None, None]
    k_hat = naive.unit(keys).flatten(1)[:, None, None]
    mask = torch.arange(9)[None] < torch.tensor([9, 2, 1])[:, None]
    got = naive.chunk_scores(qf, k_hat, mask, block=4, top_tokens=3)[:, 0]
    for b, t in enumerate([9, 2, 1]):
        ref = literal_chunk_scores(q[b : b + 1, :t], keys, None, False, min(3, t))[0]
        torch.testing.assert_close(got[b], ref, atol=1e-5, rtol=0)
    one = naive.chunk_scores(qf, k_hat, mask, top_tokens=1)[:, 0]
    assert (got <= one + 1e-6).all()  # a mean of the best never beats the best


def test_naive_layers_as_heads_is_the_rule_on_flattened_heads() -> None:
    """``[T, L, HQ, D]`` queries against ``[N, L, HKV, D]`` keys, layers as heads: the rule on
    ``[T, L*HQ, D]`` and ``[N, L*HKV, D]``; per layer: the rule on each layer's slice."""
    try:
        from msa_agent.kernels.route_topk import naive
    except ImportError:
        from kernels.route_topk import naive
    torch.manual_seed(13)
    q, keys = torch.randn(5, 3, 6, 16), naive.unit(torch.randn(29, 3, 2, 16))
    heads = naive.chunk_scores(naive.fold_layers_as_heads(q, 2)[None],
                               keys.flatten(1)[:, None, None])[0, 0]  # fmt: skip
    flat = literal_chunk_scores(q.flatten(1, 2)[None], keys.flatten(1, 2), None, True)[0]
    torch.testing.assert_close(heads, flat, atol=1e-5, rtol=0)
    per = naive.chunk_scores(naive.fold_queries(q, 2)[None], keys)[0]  # [L, N]
    for i in range(3):
        ref = literal_chunk_scores(q[None, :, i], keys[:, i], None, True)[0]
        torch.testing.assert_close(per[i], ref, atol=1e-5, rtol=0)
