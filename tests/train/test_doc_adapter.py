"""The document adapter (LoRA on the documents' forward, for their routing keys only): live
training documents reproduce the cache's chunk means when it is fresh, training reaches it,
the router file keeps it, and ingest makes routing keys through it and K/V without it."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import pytest
import torch
from train.test_query_adapter import ADAPTER_RUN, training_setup
from train.test_train import LAYERS

import msa_agent.model.encoder as encoder_module
from msa_agent.bench.router_distill import live_docs
from msa_agent.model import capture
from msa_agent.model.capture import ResumeUnsupported, decoder_layers, layer_input, resume_at
from msa_agent.model.encoder import Encoder, batch_chunk_mean
from msa_agent.model.loader import model_fingerprint, wrap_model
from msa_agent.model.query_adapter import QueryAdapter
from msa_agent.model.router import Router
from msa_agent.model.shape import ModelShape
from msa_agent.model.text import query_ids
from msa_agent.train import HiddenCache, TrainableRouter, train
from msa_agent.train.cache import DOC
from msa_agent.train.export import save_router
from msa_agent.train.live import LiveDocs
from msa_agent.train.trainer import batch_loss


@pytest.fixture(scope="module")
def lm(tiny_llama, tokenizer):  # noqa: ANN001, ANN201
    return wrap_model(tiny_llama, tokenizer, name="tiny")


def test_fresh_doc_adapter_gives_the_cached_chunk_means(lm, tmp_path) -> None:  # noqa: ANN001
    # max_doc_tokens 12: the long text is cut into pieces, each pooled on its own
    cache = HiddenCache(tmp_path, lm, LAYERS, chunk_size=4, max_doc_tokens=12)
    texts = ["red blue fox", "the amber fox and the navy dog ran past the olive gate " * 3]
    cache.ensure(texts, DOC)
    fresh = QueryAdapter.for_model(lm.model, range(0, max(LAYERS)), rank=4)
    live = live_docs(cache, texts, fresh)
    assert len(live) == 2 and live.first[2] > 3  # the long text has several pieces
    got = live.packed()
    want = cache.packed(texts, DOC)
    assert torch.equal(got.offsets, want.offsets)
    torch.testing.assert_close(got.data.float(), want.data.float(), atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize("first", [1, 2])
def test_live_docs_resume_above_the_adapter(lm, first) -> None:  # noqa: ANN001
    """Live documents kept up to the adapter's first layer and resumed from there each step
    give the chunk means of a whole adapted forward, and their gradients reach the adapter."""
    adapter = _trained_doc_router(lm, first).doc_adapter
    encoder = Encoder(lm, LAYERS, chunk_size=4)
    texts = ["red blue fox", "the amber fox and the navy dog ran past the olive gate " * 2]
    pieces = [[query_ids(lm.tokenizer, t, 512)] for t in texts]
    live = LiveDocs(encoder, pieces, adapter)
    got = live.states([1, 0])
    for d, x in zip([1, 0], got):
        ids = pieces[d][0]
        whole = batch_chunk_mean(encoder.hidden_batch([ids], adapter), [len(ids)], 4)[0]
        torch.testing.assert_close(x, whole, atol=1e-5, rtol=1e-5)
    assert set(live._base) == {0, 1}
    calls = []
    hook = decoder_layers(lm.model)[0].register_forward_hook(lambda *_: calls.append(1))
    try:
        again = live.states([0])[0]  # from the kept base forward: layer 0 does not run
    finally:
        hook.remove()
    assert not calls
    torch.testing.assert_close(again, got[1])
    again.sum().backward()
    assert any(p.grad is not None and float(p.grad.abs().max()) > 0
               for p in adapter.parameters())


def test_training_through_live_docs_reaches_the_doc_adapter(lm, tmp_path) -> None:  # noqa: ANN001
    cache, pairs, data, tr, tr.doc_adapter = training_setup(lm, tmp_path, seed=7)
    docs = live_docs(cache, [p.positive for p in pairs], tr.doc_adapter)
    rows = list(range(16))
    with torch.no_grad():
        before = float(batch_loss(tr, data, rows, 0.1, 0, random.Random(0), live_docs=docs))
        cached = float(batch_loss(tr, data, rows, 0.1, 0, random.Random(0)))
    assert abs(before - cached) < 1e-2  # fresh: the live documents are the cached ones
    train(data, tr, ADAPTER_RUN, live_docs=docs)
    with torch.no_grad():
        after = float(batch_loss(tr, data, rows, 0.1, 0, random.Random(0), live_docs=docs))
    assert after < before - 0.3, (before, after)
    moved = max(float(p.detach().abs().max()) for n, p in tr.doc_adapter.named_parameters()
                if n.endswith(".b"))
    assert moved > 0



def _trained_doc_router(lm, first: int = 0):  # noqa: ANN001, ANN202
    """A random router whose document adapter (layers ``first``.. below the last MSA layer)
    is perturbed as if trained."""
    tr = TrainableRouter(ModelShape.of(lm.model), LAYERS, rank=None, seed=1)
    tr.doc_adapter = QueryAdapter.for_model(lm.model, range(first, max(LAYERS)), rank=4)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in tr.doc_adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return tr


@pytest.mark.parametrize("first", [0, 1, 2])
def test_doc_adapter_makes_routing_keys_only(lm, first) -> None:  # noqa: ANN001
    """At ingest the document adapter changes the routing keys, never the K/V, and its keys
    are the ones training scored (the live documents' chunk means, projected), also when the
    adapted forward resumes above layer 0 from the base forward's stream."""
    tr = _trained_doc_router(lm, first)
    router = tr.to_router()
    plain = Router(router.shape, router.layer_ids)
    plain.load_state_dict({k: v for k, v in router.state_dict().items()
                           if not k.startswith("doc_adapter.")})
    ids = query_ids(lm.tokenizer, "the amber fox and the navy dog ran past the gate", 512)
    docs = [Encoder(lm, LAYERS, router=r, chunk_size=4, keep_full_kv=True).encode([ids])[0]
            for r in (router, plain)]
    assert (docs[0].route_k - docs[1].route_k).abs().max() > 1e-3
    for name in ("pooled_k", "pooled_v", "full_k", "full_v"):
        torch.testing.assert_close(getattr(docs[0], name), getattr(docs[1], name))
    live = LiveDocs(Encoder(lm, LAYERS, chunk_size=4), [[ids]], tr.doc_adapter)
    with torch.no_grad():
        trained = tr.project(live.states([0])[0], "k")
    torch.testing.assert_close(docs[0].route_k, trained, atol=1e-4, rtol=1e-4)


def test_resumed_forward_skips_the_layers_below(lm, monkeypatch) -> None:  # noqa: ANN001
    """The adapted forward computes no layer below the adapter's first, and a layer loop that
    cannot resume falls back to a whole forward with the same keys."""
    router = _trained_doc_router(lm, first=2).to_router()
    ids = query_ids(lm.tokenizer, "the amber fox and the navy dog ran past the gate", 512)
    encoder = Encoder(lm, LAYERS, router=router, chunk_size=4)
    calls = []
    hook = decoder_layers(lm.model)[0].register_forward_hook(lambda *_: calls.append(1))
    try:
        resumed = encoder.encode([ids])[0].route_k
    finally:
        hook.remove()
    assert len(calls) == 1  # the base forward only

    @contextmanager
    def unsupported(*_args: object) -> Iterator[None]:
        raise ResumeUnsupported("simulated")
        yield

    monkeypatch.setattr(encoder_module, "resume_at", unsupported)
    torch.testing.assert_close(encoder.encode([ids])[0].route_k, resumed)


def test_resume_refuses_a_loop_that_does_not_hand_on_the_stream(lm, monkeypatch) -> None:  # noqa: ANN001
    ids = torch.tensor([[5, 6, 7, 8]])
    real = list(decoder_layers(lm.model))
    with layer_input(lm.model, 2) as entering:
        lm.model(input_ids=ids)
    # a loop that passes on a copy (as one that unpacks a tuple would): refused, not misread
    monkeypatch.setattr(capture._HandOn, "forward", lambda self, *_a, **_k: self.hidden.clone())
    with resume_at(lm.model, 2, entering["hidden"]), pytest.raises(ResumeUnsupported):
        lm.model(input_ids=ids)
    assert all(a is b for a, b in zip(decoder_layers(lm.model), real, strict=True))


def test_router_file_keeps_the_doc_adapter(lm, tmp_path) -> None:  # noqa: ANN001
    tr = _trained_doc_router(lm)
    path = save_router(tr, tmp_path / "r.safetensors", model_fingerprint(lm), dtype="float32")
    loaded = Router.load(path, model_fingerprint(lm))
    assert loaded.doc_adapter is not None and loaded.adapter is None
    assert loaded.doc_adapter.config() == tr.doc_adapter.config()
    assert loaded.router_id == tr.to_router().router_id
    again = TrainableRouter.from_router(loaded, rank=None)
    assert again.doc_adapter is not None
    assert all(p.requires_grad for p in again.doc_adapter.parameters())
    without = TrainableRouter.from_router(loaded, rank=None)
    without.doc_adapter = None
    assert without.to_router().router_id != loaded.router_id  # stale keys are detected


def test_a_doc_adapter_refuses_cached_documents(lm, tmp_path) -> None:  # noqa: ANN001
    _, _, data, tr, tr.doc_adapter = training_setup(lm, tmp_path, seed=3)
    with pytest.raises(ValueError, match="live documents"):
        train(data, tr, ADAPTER_RUN)


@pytest.mark.filterwarnings("ignore::msa_agent.runtime.engine.RoutingQualityWarning")
def test_a_space_routes_with_a_doc_adapter_router(lm, tiny_pair, tmp_path) -> None:  # noqa: ANN001
    """Through the API: a space made with a document-adapter router stores the adapter's
    routing keys and the base K/V, and switching to the plain router re-encodes the keys."""
    import numpy as np

    from msa_agent import Memory
    from msa_agent.store import Space

    tr = _trained_doc_router(lm)
    with_doc = save_router(tr, tmp_path / "doc.safetensors", model_fingerprint(lm))
    tr.doc_adapter = None
    plain = save_router(tr, tmp_path / "plain.safetensors", model_fingerprint(lm))
    texts = [f"Fact {i}: the amber fox met the navy dog at gate {i}." for i in range(4)]

    def stored(path):  # noqa: ANN001, ANN202
        with Space.open(path) as space:
            rows = space.live_chunks()
            return [np.concatenate(space.read(a, rows)) for a in ("route_k", "pooled_k")]

    kw = {"model": tiny_pair, "chunk_size": 8, "msa_layers": LAYERS}
    with Memory.open(tmp_path / "m", router_path=str(with_doc), **kw) as mem:
        mem.remember_many(texts)
        assert len(mem.recall("amber fox gate 2", k=2, routing="msa")) == 2
    doc_keys, doc_pooled = stored(tmp_path / "m")
    with Memory.open(tmp_path / "m", router_path=str(plain), **kw):
        pass  # another router: the routing keys are re-encoded at open
    plain_keys, plain_pooled = stored(tmp_path / "m")
    assert np.abs(doc_keys.astype(np.float32) - plain_keys.astype(np.float32)).max() > 1e-3
    np.testing.assert_array_equal(doc_pooled, plain_pooled)
def test_frozen_parts_keep_their_weights(lm, tmp_path) -> None:  # noqa: ANN001
    cache, pairs, data, tr, tr.doc_adapter = training_setup(lm, tmp_path, seed=7)
    docs = live_docs(cache, [p.positive for p in pairs], tr.doc_adapter)
    fixed = {n: p.detach().clone() for n, p in tr.named_parameters()
             if not n.startswith("doc_adapter.")}
    train(data, tr, replace(ADAPTER_RUN, frozen=("factors",)), live_docs=docs)
    assert all(torch.equal(p, fixed[n]) for n, p in tr.named_parameters() if n in fixed)
    assert max(float(p.detach().abs().max()) for n, p in tr.doc_adapter.named_parameters()
               if n.endswith(".b")) > 0  # the document adapter learned
    with pytest.raises(ValueError, match="cannot freeze"):
        train(data, tr, replace(ADAPTER_RUN, frozen=("adapter",)), live_docs=docs)
    with pytest.raises(ValueError, match="nothing to train"):
        train(data, tr, replace(ADAPTER_RUN, frozen=("factors", "doc_adapter")),
              live_docs=docs)


