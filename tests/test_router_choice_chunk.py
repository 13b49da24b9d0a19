"""The shipped router is chosen by model, layers and the space's chunk size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from msa_agent.model import router as router_mod
from msa_agent.model.router import Router, shipped_router
from msa_agent.model.shape import ModelShape

SHIPPED = router_mod.SHIPPED_DIR


def _header(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


def _shipped_identity() -> tuple[dict, list[int]]:
    h = _header(SHIPPED / "smollm2-135m-instruct.safetensors")
    return json.loads(h["fingerprint"]), json.loads(h["layers"])


def test_shipped_router_follows_chunk_size() -> None:
    fp, layers = _shipped_identity()
    p64 = shipped_router(fp, layers, 64)
    p16 = shipped_router(fp, layers, 16)
    assert p64 is not None and p64.name == "smollm2-135m-instruct.safetensors"
    assert p16 is not None and p16.name == "smollm2-135m-instruct-p16.safetensors"
    assert json.loads(_header(p16)["meta"])["chunk_size"] == 16
    # no router trained at 32: the P = 64 one, which the file without a chunk size is
    assert shipped_router(fp, layers, 32) == p64
    assert shipped_router(fp, layers[1:], 16) is None  # other layers: none


def _fake(path: Path, fp: dict, layers: list[int], chunk: int | None) -> None:
    shape = ModelShape(n_layers=4, hidden=8, n_heads=2, n_kv_heads=1, head_dim=4)
    r = Router(shape, layers, {} if chunk is None else {"chunk_size": chunk})
    torch.manual_seed(0)
    r.save(path, fp)


def test_selection_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fp = {"architecture": "llama", "config_hash": "c", "weights_hash": "w"}
    monkeypatch.setattr(router_mod, "SHIPPED_DIR", tmp_path)
    _fake(tmp_path / "a-p16.safetensors", fp, [2, 3], 16)
    assert shipped_router(fp, [2, 3], 64) == tmp_path / "a-p16.safetensors"  # the only one
    _fake(tmp_path / "b.safetensors", fp, [2, 3], None)
    assert shipped_router(fp, [2, 3], 64) == tmp_path / "b.safetensors"
    assert shipped_router(fp, [2, 3], 16) == tmp_path / "a-p16.safetensors"
    assert shipped_router(fp, [2, 3], 8) == tmp_path / "b.safetensors"
    other = {**fp, "weights_hash": "x"}
    assert shipped_router(other, [2, 3], 16) is None
    (tmp_path / "0-broken.safetensors").write_bytes(b"not a router")  # skipped, not fatal
    assert shipped_router(fp, [2, 3], 16) == tmp_path / "a-p16.safetensors"
