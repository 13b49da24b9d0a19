"""Documents encoded live through a document adapter (issue 13's measurement of the document
side): a fresh adapter reproduces the cache's chunk means, pieces included, and training
through live documents reaches the adapter."""

from __future__ import annotations

import random

import pytest
import torch
from train.test_query_adapter import ADAPTER_RUN, training_setup
from train.test_train import LAYERS

from msa_agent.bench.router_distill import live_docs
from msa_agent.model.loader import wrap_model
from msa_agent.model.query_adapter import QueryAdapter
from msa_agent.model.shape import ModelShape
from msa_agent.train import HiddenCache, TrainableRouter, train
from msa_agent.train.cache import DOC
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


def test_doc_adapter_is_saved_beside_the_router(lm, tmp_path) -> None:  # noqa: ANN001
    from safetensors import safe_open

    from msa_agent.train.export import save_doc_adapter

    tr = TrainableRouter(ModelShape.of(lm.model), LAYERS, rank=8, seed=0)
    with pytest.raises(ValueError, match="no document adapter"):
        save_doc_adapter(tr, tmp_path / "d.safetensors")
    tr.doc_adapter = QueryAdapter.for_model(lm.model, range(0, max(LAYERS)), rank=4)
    path = save_doc_adapter(tr, tmp_path / "d.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert set(f.keys()) == set(tr.doc_adapter.state_dict())
        assert '"rank": 4' in (f.metadata() or {})["doc_adapter"]
