"""A router is bound to a model's weights, not to the dtype they are computed in: the same
weights in float32, bfloat16 or float16 find the router saved for any of them; other weights
do not (before ``weights_sample``, a bfloat16 model silently lost its shipped router)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from msa_agent.errors import RouterMismatchError
from msa_agent.model.loader import model_fingerprint, wrap_model
from msa_agent.model.router import SAMPLE_RTOL, Router, _identity, same_model
from msa_agent.model.shape import ModelShape
from msa_testing import make_llama

DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _fingerprint(model: torch.nn.Module, tokenizer, dtype: torch.dtype) -> dict:  # noqa: ANN001
    return model_fingerprint(wrap_model(copy.deepcopy(model).to(dtype), tokenizer, name="m",
                                        device="cpu"))


@pytest.mark.parametrize("saved", DTYPES)
@pytest.mark.parametrize("given_dtype", DTYPES)
def test_same_weights_in_any_dtype_match(tiny_llama, tokenizer, saved: torch.dtype,  # noqa: ANN001
                                         given_dtype: torch.dtype) -> None:
    a = _fingerprint(tiny_llama, tokenizer, saved)
    b = _fingerprint(tiny_llama, tokenizer, given_dtype)
    assert same_model(_identity(a), b)
    if saved != given_dtype:
        assert a["weights_hash"] != b["weights_hash"]  # the exact hash alone would refuse


def test_other_weights_do_not_match(tiny_llama, tokenizer) -> None:  # noqa: ANN001
    other = make_llama(seed=1)
    a = _fingerprint(tiny_llama, tokenizer, torch.float32)
    for dtype in DTYPES:
        assert not same_model(_identity(a), _fingerprint(other, tokenizer, dtype))
    nudged = copy.deepcopy(tiny_llama)
    with torch.no_grad():  # a fine-tune that moved the embedding table by 5%
        nudged.get_input_embeddings().weight.mul_(1.05)
    assert not same_model(_identity(a), _fingerprint(nudged, tokenizer, torch.float32))
    assert not same_model({**_identity(a), "config_hash": "x"}, a)


def test_without_a_sample_the_exact_hash_decides(tiny_llama, tokenizer) -> None:  # noqa: ANN001
    a = _fingerprint(tiny_llama, tokenizer, torch.float32)
    legacy = {k: v for k, v in _identity(a).items() if k != "weights_sample"}
    assert same_model(legacy, a)
    assert not same_model(legacy, _fingerprint(tiny_llama, tokenizer, torch.bfloat16))


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=-4.0, max_value=4.0, allow_nan=False, width=32))
def test_one_16_bit_rounding_is_inside_the_tolerance(x: float) -> None:
    for dtype in (torch.bfloat16, torch.float16):
        y = torch.tensor(x, dtype=torch.float32).to(dtype).float().item()
        sample = [float(f"{x:.6g}")]
        assert same_model({"weights_sample": sample}, {"weights_sample": [float(f"{y:.6g}")]})
    far = x * (1 + 2 * SAMPLE_RTOL) + (1e-3 if x >= 0 else -1e-3)
    assert not same_model({"weights_sample": [x]}, {"weights_sample": [far]})


def test_router_load_follows_the_rule(tmp_path: Path, tiny_llama, tokenizer) -> None:  # noqa: ANN001
    shape = ModelShape.of(tiny_llama)
    path = Router(shape, [2, 3]).save(tmp_path / "r.safetensors",
                                      _fingerprint(tiny_llama, tokenizer, torch.float32))
    Router.load(path, _fingerprint(tiny_llama, tokenizer, torch.bfloat16))  # no error
    with pytest.raises(RouterMismatchError, match="another model"):
        Router.load(path, _fingerprint(make_llama(seed=1), tokenizer, torch.bfloat16))
