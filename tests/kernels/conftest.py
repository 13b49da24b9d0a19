"""Kernel tests: CPU runs go through the Triton interpreter; torch.empty is poisoned with NaN."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def nan_empty(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Outputs a kernel forgets to write stay NaN and fail the RMS check (as in fla)."""
    real_empty = torch.empty

    def poisoned(*args: Any, **kwargs: Any) -> torch.Tensor:
        t = real_empty(*args, **kwargs)
        if t.is_floating_point():
            t.fill_(float("nan"))
        return t

    monkeypatch.setattr(torch, "empty", poisoned)
    yield


def rel_rms(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    return ((out - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt().clamp_min(1e-30)).item()


@pytest.fixture
def assert_rms() -> Callable[[torch.Tensor, torch.Tensor, float], None]:
    def check(out: torch.Tensor, ref: torch.Tensor, tol: float) -> None:
        assert out.shape == ref.shape, (out.shape, ref.shape)
        assert not torch.isnan(out).any(), "NaN in output (unwritten element?)"
        err = rel_rms(out, ref)
        assert err < tol, f"relative RMS {err:.3e} >= {tol:.1e}"

    return check
