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


def test_heads_first_rows_and_scratch_interpret(assert_rms: Check) -> None:
    """``heads_first`` reads a model's ``[H, T, D]`` rows as they are, and split buffers kept
    in ``scratch`` serve later calls of one shape (one entry per shape) with right results."""
    torch.manual_seed(5)
    scratch: dict = {}
    for T, TK in ((6, 6), (6, 6), (1, 7)):
        HQ, HKV, D, P, PAGE, L = 4, 2, 32, 9, 8, 5
        q = torch.randn(HQ, T, D)
        kl, vl = torch.randn(HKV, TK, D), torch.randn(HKV, TK, D)
        kp, vp = torch.randn(P, PAGE, HKV, D), torch.randn(P, PAGE, HKV, D)
        idx, plen = torch.randperm(P)[:L], torch.randint(1, PAGE + 1, (L,))
        out = memory_attention(q, kl, vl, kp, vp, idx, 0.2, page_len=plen, num_splits=3,
                               heads_first=True, scratch=scratch)
        ref = memory_attention_ref(q.transpose(0, 1).double(), kl.transpose(0, 1).double(),
                                   vl.transpose(0, 1).double(), kp.double(), vp.double(), idx,
                                   0.2, plen)
        assert_rms(out, ref, TOL[torch.float32])
    assert len(scratch) == 2  # (T = 6) and (T = 1): the second T = 6 call reused its buffers


def test_specialisation_follows_triton_rules() -> None:
    """The relaunch key tells apart what Triton compiles apart: dtypes, 16-byte alignment,
    ints equal to 1, multiples of 16, and ints wider than 32 bits."""
    try:
        from msa_agent.kernels._relaunch import specialisation
    except ImportError:
        from kernels._relaunch import specialisation
    x = torch.zeros(64, dtype=torch.float16)
    assert specialisation((x,)) != specialisation((x[1:],))  # 2 bytes off: not aligned
    assert specialisation((x,)) == specialisation((x[8:],))  # 16 bytes off: aligned
    assert specialisation((x,)) != specialisation((x.float(),))
    assert specialisation((1,)) != specialisation((2,)) == specialisation((3,))
    assert specialisation((32,)) != specialisation((33,))
    assert specialisation((33,)) != specialisation((2**31 + 1,))
    assert specialisation((0.5,)) == specialisation((2.5,))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_relaunch_matches_the_jit_gpu(assert_rms: Check, monkeypatch: pytest.MonkeyPatch) -> None:
    """Launches after the first go to the compiled kernel directly; across shapes, unaligned
    views and repeats they give what the JIT's own launch gives, bit for bit."""
    torch.manual_seed(6)
    HQ, HKV, D, P, PAGE, L = 9, 3, 64, 40, 64, 30
    kp, vp = (torch.randn(P, PAGE, HKV, D, device="cuda", dtype=torch.bfloat16)
              for _ in range(2))
    idx = torch.randperm(P, device="cuda")[:L].int()
    plen = torch.randint(1, PAGE + 1, (L,), device="cuda").int()
    scratch: dict = {}
    for T in (22, 22, 16, 1, 1, 22):
        base = torch.randn(HQ * T * D + 1, device="cuda", dtype=torch.bfloat16)
        q = base[T % 2:][:HQ * T * D].view(HQ, T, D)  # odd T: 2 bytes off alignment
        kl, vl = (torch.randn(HKV, T, D, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        args = (q, kl, vl, kp, vp, idx, 0.125)
        monkeypatch.setenv("MSA_TRITON_RELAUNCH", "1")
        got = memory_attention(*args, page_len=plen, heads_first=True, scratch=scratch)
        monkeypatch.setenv("MSA_TRITON_RELAUNCH", "0")
        want = memory_attention(*args, page_len=plen, heads_first=True)
        assert torch.equal(got, want)
        ref = memory_attention_ref(q.transpose(0, 1).double(), kl.transpose(0, 1).double(),
                                   vl.transpose(0, 1).double(), kp.double(), vp.double(), idx,
                                   0.125, plen)
        assert_rms(got, ref, TOL[torch.bfloat16])


def test_relauncher_calls_the_compiled_kernel_and_falls_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The first launch of a key goes through the JIT and keeps its compiled kernel; later
    ones call that kernel with a 3-D grid and every parameter; a kernel that cannot be
    launched so sends this and every later launch back to the JIT, with a warning."""
    try:
        from msa_agent.kernels import _relaunch
    except ImportError:
        from kernels import _relaunch
    calls: list[tuple] = []

    class Compiled:
        fail = False

        def __getitem__(self, grid: tuple) -> Callable[..., None]:
            def run(*args: object) -> None:
                if self.fail:
                    raise IndexError("tuple index out of range")
                calls.append(("direct", grid, args))
            return run

    compiled = Compiled()

    class Jit:
        arg_names, constexprs = ["x", "n", "C"], [2]

        def __getitem__(self, grid: tuple) -> Callable[..., Compiled]:
            def run(*args: object, **consts: object) -> Compiled:
                calls.append(("jit", grid, args, consts))
                return compiled
            return run

    monkeypatch.setattr(_relaunch, "relaunch_enabled", lambda: True)
    launch = _relaunch.Relauncher(Jit())
    x = torch.zeros(8)
    for _ in range(2):
        launch((4,), (x, 3), {"C": 7, "num_warps": 4}, ("C7",))
    assert calls == [("jit", (4,), (x, 3), {"C": 7, "num_warps": 4}),
                     ("direct", (4, 1, 1), (x, 3, 7))]
    launch((4,), (x, 16), {"C": 7, "num_warps": 4}, ("C7",))  # n = 16: compiled apart
    assert calls[-1][0] == "jit"
    compiled.fail = True
    with pytest.warns(RuntimeWarning, match="relaunching"):
        launch((4,), (x, 3), {"C": 7, "num_warps": 4}, ("C7",))
    launch((4,), (x, 3), {"C": 7, "num_warps": 4}, ("C7",))
    assert [c[0] for c in calls[-2:]] == ["jit", "jit"] and launch.broken
