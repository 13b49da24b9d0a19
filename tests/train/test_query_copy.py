"""Routing queries from a merged copy of the backbone (``Encoder(query_dtype=...)``): the
adapter's deltas merged into a copy's weights give the hooked base model's queries, the base
model is never touched, another router gets a new copy, and ``routing_query_dtype`` picks it
by backbone dtype and device."""

from __future__ import annotations

import pytest
import torch
from train.test_query_adapter import _ids, _router
from train.test_train import LAYERS

from msa_agent.model import loader
from msa_agent.model.encoder import Encoder
from msa_agent.model.loader import query_copy_dtype, wrap_model
from msa_agent.model.query_adapter import merged_copy


@pytest.fixture(scope="module")
def lm(tiny_llama, tokenizer):  # noqa: ANN001, ANN201
    return wrap_model(tiny_llama, tokenizer, name="tiny")


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_merged_in_float32_equals_the_hooks(lm) -> None:  # noqa: ANN001
    router = _router(lm, trained=True)
    ids = _ids(lm, "the amber fox and the navy dog")
    before = _weights(lm.model)
    hooked = Encoder(lm, LAYERS, router=router).query_vectors(ids)
    merged = Encoder(lm, LAYERS, router=router, query_dtype=torch.float32).query_vectors(ids)
    torch.testing.assert_close(merged, hooked, rtol=1e-4, atol=1e-5)
    plain = Encoder(lm, LAYERS, router=_router(lm, trained=False)).query_vectors(ids)
    assert (hooked - plain).abs().max() > 1e-3  # the adapter did act: the merge carried it
    for k, v in _weights(lm.model).items():  # the base model is untouched
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_bfloat16_copy_is_close_and_documents_keep_the_base(lm) -> None:  # noqa: ANN001
    router = _router(lm, trained=True)
    ids = _ids(lm, "coral plum and a violet kite")
    enc = Encoder(lm, LAYERS, router=router, chunk_size=4, query_dtype=torch.bfloat16)
    got = enc.query_vectors(ids)
    want = Encoder(lm, LAYERS, router=router).query_vectors(ids)
    assert got.dtype == want.dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(got.flatten(1), want.flatten(1), dim=-1)
    assert cos.min() > 0.99, cos
    copy_model = enc._query_copy[1]
    assert next(copy_model.parameters()).dtype == torch.bfloat16
    assert next(lm.model.parameters()).dtype == torch.float32
    doc = Encoder(lm, LAYERS, router=router, chunk_size=4)
    torch.testing.assert_close(enc.encode([ids])[0].route_k, doc.encode([ids])[0].route_k)


def test_another_router_gets_another_copy(lm) -> None:  # noqa: ANN001
    first, second = _router(lm, trained=True), _router(lm, trained=False)
    ids = _ids(lm, "red blue fox")
    enc = Encoder(lm, LAYERS, router=first, query_dtype=torch.float32)
    a = enc.query_vectors(ids)
    made = enc._query_copy[1]
    enc.query_vectors(ids)
    assert enc._query_copy[1] is made  # one copy per router
    enc.router = second
    b = enc.query_vectors(ids)
    assert enc._query_copy[1] is not made
    torch.testing.assert_close(b, Encoder(lm, LAYERS, router=second).query_vectors(ids),
                               rtol=1e-4, atol=1e-5)
    assert (a - b).abs().max() > 1e-3


def test_merged_copy_without_an_adapter_is_a_cast(lm) -> None:  # noqa: ANN001
    copy = merged_copy(lm.model, None, torch.bfloat16)
    for (k, v), w in zip(copy.state_dict().items(), lm.model.state_dict().values()):
        torch.testing.assert_close(v, w.to(torch.bfloat16), rtol=0, atol=0, msg=k)


@pytest.mark.parametrize(("setting", "backbone", "native", "want"), [
    ("auto", torch.float32, "bfloat16", torch.bfloat16),
    ("auto", torch.float32, "float32", None),
    ("auto", torch.bfloat16, "bfloat16", None),
    ("auto", torch.float16, "bfloat16", None),
    ("same", torch.float32, "bfloat16", None),
    ("bfloat16", torch.float32, "float32", torch.bfloat16),
    ("bfloat16", torch.bfloat16, "bfloat16", None),
])
def test_query_copy_dtype(monkeypatch: pytest.MonkeyPatch, tiny_llama, tokenizer,  # noqa: ANN001
                          setting: str, backbone: torch.dtype, native: str,
                          want: torch.dtype | None) -> None:
    monkeypatch.setattr(loader, "native_dtype", lambda device: native)
    held = wrap_model(tiny_llama.to(backbone), tokenizer, name="tiny")
    try:
        assert query_copy_dtype(setting, held) == want
    finally:
        tiny_llama.to(torch.float32)


def test_the_copy_is_made_without_another_forwards_hooks(lm) -> None:  # noqa: ANN001
    """Made while a document forward holds the model (its tap hooks on the modules), the copy
    waits for it and carries no hook; a copy made mid-forward once filled that forward's taps
    (a concurrent remember and recall failed in tests/test_async_memory.py)."""
    import threading

    from msa_agent.model.capture import model_lock, tap_layers

    enc = Encoder(lm, LAYERS, router=_router(lm, trained=True), query_dtype=torch.float32)
    made = threading.Event()
    with model_lock(lm.model), tap_layers(lm.model, LAYERS, ("hidden",)):
        worker = threading.Thread(target=lambda: (enc._query_model(), made.set()))
        worker.start()
        assert not made.wait(0.3)  # waits for the model while hooks are on it
    worker.join(10)
    assert made.is_set()

    def hooks(model: torch.nn.Module) -> int:
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())

    assert hooks(enc._query_copy[1]) == hooks(lm.model)  # none of the forward's taps


def test_without_a_router_queries_come_from_the_backbone(lm) -> None:  # noqa: ANN001
    ids = _ids(lm, "red blue fox")
    enc = Encoder(lm, LAYERS, query_dtype=torch.bfloat16)  # the model's own Q/K
    torch.testing.assert_close(enc.query_vectors(ids), Encoder(lm, LAYERS).query_vectors(ids))
    assert enc._query_copy is None
