"""The backbone's compute dtype: ``dtype="auto"`` picks by device for a new space, and an
existing space is opened in the dtype it was computed in unless another is asked for (which
is refused, since its arrays were computed in one)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from msa_agent import Memory
from msa_agent.model import loader
from msa_agent.model.loader import native_dtype
from msa_agent.store.errors import FingerprintMismatchError
from msa_testing import make_llama, make_tokenizer, save_tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.mark.parametrize(("avx512_bf16", "amx", "want"), [
    (True, False, "bfloat16"), (False, True, "bfloat16"), (False, False, "float32")])
def test_native_dtype_on_a_cpu(monkeypatch: pytest.MonkeyPatch, avx512_bf16: bool,
                               amx: bool, want: str) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16,
                        raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert native_dtype(torch.device("cpu")) == want


def test_native_dtype_without_the_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.delattr(torch.cpu, name, raising=False)
    assert native_dtype(torch.device("cpu")) == "float32"  # a torch without them: safe


def test_native_dtype_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert native_dtype(torch.device("cuda")) == "float32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert native_dtype(torch.device("cuda")) == "bfloat16"


def _open(path: Path, model_dir: Path, **kw: str) -> Memory:
    return Memory.open(path, str(model_dir), routing="own_qk", **kw)


def test_auto_picks_by_device_and_the_space_keeps_it(tmp_path: Path, model_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "native_dtype", lambda device: "bfloat16")
    with _open(tmp_path / "m", model_dir, dtype="auto") as mem:
        assert mem.config.dtype == "bfloat16"
        assert next(mem._engine.lm.model.parameters()).dtype == torch.bfloat16
        ids = mem.remember_many(["alpha beta", "gamma delta"])
    monkeypatch.setattr(loader, "native_dtype", lambda device: "float32")  # another machine
    for kw in ({}, {"dtype": "auto"}):  # the space's own dtype, not the device's
        with _open(tmp_path / "m", model_dir, **kw) as mem:
            assert mem.config.dtype == "bfloat16"
            assert sorted(m.id for m in mem.list()) == sorted(ids)
            assert mem.recall("alpha", k=1)
    with pytest.raises(FingerprintMismatchError, match="computed in bfloat16, not float32"):
        _open(tmp_path / "m", model_dir, dtype="float32")  # asked for another: refused
    with _open(tmp_path / "m", model_dir) as mem:  # and nothing was lost
        assert len(mem.list()) == 2


def test_an_explicit_dtype_makes_a_space_in_it(tmp_path: Path, model_dir: Path) -> None:
    with _open(tmp_path / "m", model_dir, dtype="float32") as mem:
        mem.remember("alpha")
    with _open(tmp_path / "m", model_dir) as mem:
        assert mem.config.dtype == "float32"


def test_a_held_model_keeps_its_dtype_under_auto(tmp_path: Path) -> None:
    pair = (make_llama().to(torch.bfloat16), make_tokenizer())
    with Memory.open(tmp_path / "m", pair, routing="own_qk", dtype="auto") as mem:
        assert mem.config.dtype == "bfloat16"
        mem.remember("alpha")
