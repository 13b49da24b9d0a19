"""The query-side LoRA adapter: a no-op when fresh, query side only, saved with the router,
trained through live query forwards, and the training states equal the runtime's."""

from __future__ import annotations

import random

import pytest
import torch
from train.test_train import LAYERS, synthetic_pairs

from msa_agent.errors import InvalidInputError
from msa_agent.model import encoder as encoder_module
from msa_agent.model.encoder import Encoder, packed_inputs, packs
from msa_agent.model.loader import model_fingerprint, wrap_model
from msa_agent.model.query_adapter import QueryAdapter
from msa_agent.model.router import Router
from msa_agent.model.shape import ModelShape
from msa_agent.model.text import query_ids
from msa_agent.train import HiddenCache, TrainableRouter, TrainConfig, build_dataset, train
from msa_agent.train.export import save_router
from msa_agent.train.live import LiveQueries
from msa_agent.train.trainer import batch_loss


@pytest.fixture(scope="module")
def lm(tiny_llama, tokenizer):  # noqa: ANN001, ANN201
    return wrap_model(tiny_llama, tokenizer, name="tiny")


def _router(lm, trained: bool) -> Router:  # noqa: ANN001
    """A random router whose adapter (layers 0-2) is fresh or perturbed as if trained."""
    tr = TrainableRouter(ModelShape.of(lm.model), LAYERS, rank=None, seed=1)
    tr.adapter = QueryAdapter.for_model(lm.model, range(0, max(LAYERS)), rank=4)
    if trained:
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in tr.adapter.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return tr.to_router()


def _ids(lm, text: str) -> list[int]:  # noqa: ANN001
    return query_ids(lm.tokenizer, text, 512)


def test_fresh_adapter_changes_nothing(lm) -> None:  # noqa: ANN001
    router = _router(lm, trained=False)
    plain = Router(router.shape, router.layer_ids)
    plain.load_state_dict({k: v for k, v in router.state_dict().items()
                           if not k.startswith("adapter.")})
    ids = _ids(lm, "red blue fox")
    got = Encoder(lm, LAYERS, router=router).query_vectors(ids)
    want = Encoder(lm, LAYERS, router=plain).query_vectors(ids)
    torch.testing.assert_close(got, want)


def test_adapter_is_query_side_only(lm) -> None:  # noqa: ANN001
    trained, fresh = _router(lm, trained=True), _router(lm, trained=False)
    fresh.load_state_dict({k: v for k, v in trained.state_dict().items()
                           if not k.startswith("adapter.")}, strict=False)
    ids = _ids(lm, "the amber fox and the navy dog")
    hooks = {n: len(m._forward_hooks) for n, m in lm.model.named_modules()}
    q_trained = Encoder(lm, LAYERS, router=trained).query_vectors(ids)
    q_fresh = Encoder(lm, LAYERS, router=fresh).query_vectors(ids)
    assert (q_trained - q_fresh).abs().max() > 1e-3  # the adapter acts on queries
    doc = [Encoder(lm, LAYERS, router=r, chunk_size=4).encode([ids])[0]
           for r in (trained, fresh)]
    for name in ("route_k", "pooled_k", "pooled_v"):  # and not on documents
        torch.testing.assert_close(getattr(doc[0], name), getattr(doc[1], name))
    logits = lm.model(torch.tensor([ids])).logits  # no hook is left on the model
    with torch.no_grad():
        again = lm.model(torch.tensor([ids])).logits
    torch.testing.assert_close(logits, again)
    assert {n: len(m._forward_hooks) for n, m in lm.model.named_modules()} == hooks


def test_router_file_keeps_the_adapter(lm, tmp_path) -> None:  # noqa: ANN001
    router = _router(lm, trained=True)
    ids = _ids(lm, "coral plum")
    want = Encoder(lm, LAYERS, router=router).query_vectors(ids)
    tr = TrainableRouter.from_router(router, rank=None)
    path = save_router(tr, tmp_path / "r.safetensors", model_fingerprint(lm), dtype="float32")
    loaded = Router.load(path, model_fingerprint(lm))
    assert loaded.adapter is not None and loaded.adapter.config() == router.adapter.config()
    assert loaded.router_id == router.router_id
    torch.testing.assert_close(Encoder(lm, LAYERS, router=loaded).query_vectors(ids), want)


def test_live_states_equal_the_runtime_query(lm) -> None:  # noqa: ANN001
    router = _router(lm, trained=True)
    tr = TrainableRouter.from_router(router, rank=None)
    texts = ["red blue", "the olive fox jumps", "gold"]
    ids = [_ids(lm, t) for t in texts]
    live = LiveQueries(Encoder(lm, LAYERS), ids, tr.adapter)
    packed = live.packed()
    for i, q in enumerate(ids):
        got = tr.project(packed.row(i).float(), "q")
        want = Encoder(lm, LAYERS, router=router).query_vectors(q)
        torch.testing.assert_close(got, want, atol=2e-3, rtol=2e-3)  # packed rows are fp16


# a short run that must move a fresh adapter (this file's and test_doc_adapter's)
ADAPTER_RUN = TrainConfig(steps=25, batch_size=16, lr=1e-2, rank=8, hard_negatives=1,
                          mine_start=5, mine_every=10, mine_top=4)


def training_setup(lm, tmp_path, seed: int):  # noqa: ANN001, ANN201
    """A tiny cache, 48 synthetic pairs, their dataset, a rank-8 router and a fresh adapter
    for layers 0 to the last MSA layer."""
    cache = HiddenCache(tmp_path, lm, LAYERS, chunk_size=8, max_doc_tokens=512)
    pairs = synthetic_pairs(48, seed=seed)
    data = build_dataset(cache, pairs)
    tr = TrainableRouter(ModelShape.of(lm.model), LAYERS, rank=8, seed=0)
    return cache, pairs, data, tr, QueryAdapter.for_model(lm.model, range(0, max(LAYERS)),
                                                          rank=4)


def test_training_reaches_the_adapter(lm, tmp_path) -> None:  # noqa: ANN001
    cache, pairs, data, tr, tr.adapter = training_setup(lm, tmp_path, seed=5)
    cfg = ADAPTER_RUN
    with pytest.raises(ValueError, match="live"):
        train(data, tr, cfg)  # an adapter cannot train on cached queries
    live = LiveQueries(cache.encoder, [_ids(lm, p.query) for p in pairs], tr.adapter)
    rows = list(range(16))
    with torch.no_grad():
        before = float(batch_loss(tr, data, rows, 0.1, 0, random.Random(0), live=live))
    report = train(data, tr, cfg, live=live)
    with torch.no_grad():
        after = float(batch_loss(tr, data, rows, 0.1, 0, random.Random(0), live=live))
    assert after < before - 0.3, (before, after)
    moved = max(float(p.detach().abs().max()) for n, p in tr.adapter.named_parameters()
                if n.endswith(".b"))
    assert moved > 0 and len(report.losses) == 25


def test_bad_adapter_settings_are_refused(lm) -> None:  # noqa: ANN001
    with pytest.raises(ValueError):
        QueryAdapter.for_model(lm.model, [], rank=4)
    with pytest.raises(ValueError):
        QueryAdapter.for_model(lm.model, [0], rank=0)
    with pytest.raises(ValueError, match="empty"):
        LiveQueries(Encoder(lm, LAYERS), [[]], QueryAdapter.for_model(lm.model, [0]))


@pytest.mark.parametrize(("with_router", "pack_tokens"), [(True, 512), (False, 512), (True, 9)])
def test_queries_and_summaries_share_forwards_and_keep_each_rows_weights(
        lm, with_router: bool, pack_tokens: int, monkeypatch) -> None:  # noqa: ANN001
    """Query texts (the adapter on) and summary texts (base weights) packed into shared
    forwards give what the two kinds' own forwards give, in one pack or in several; the
    adapter does move the summary rows where it is on."""
    monkeypatch.setattr(encoder_module, "PACK_TOKENS", pack_tokens)
    router = _router(lm, trained=True) if with_router else None
    enc = Encoder(lm, LAYERS, router=router)
    queries = [_ids(lm, t) for t in ("red blue", "the olive fox jumps over the gate")]
    summaries = [_ids(lm, t) for t in ("gold", "a navy dog and a plum", "coral")]
    top = len(lm.model.model.layers) - 1
    got_q, got_s = enc.queries_and_summaries(queries, summaries, top)
    want_q = enc.query_vectors_many(queries)
    assert len(got_q) == 2 and got_s.shape == (3, enc.shape.hidden)
    for got, want in zip(got_q, want_q):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got_s, enc.last_states(summaries, top), atol=1e-4, rtol=1e-4)
    if with_router:  # the summary rows were not adapted: the adapter would change them
        hooked = Encoder(lm, LAYERS, router=router)
        with router.adapter.applied(lm.model):
            adapted = hooked.last_states(summaries, top)
        assert (adapted - got_s).abs().max() > 1e-3
    assert enc.queries_and_summaries([], summaries, top)[0] == []
    with pytest.raises(InvalidInputError):
        enc.queries_and_summaries([[]], summaries, top)


def test_packs_and_packed_inputs() -> None:
    assert list(packs([3, 4, 2, 9, 1], 7)) == [[0, 1], [2], [3], [4]]
    ids, mask, positions = packed_inputs([[5, 6], [7, 8, 9]], torch.float32)
    assert ids.tolist() == [[5, 6, 7, 8, 9]] and positions.tolist() == [[0, 1, 0, 1, 2]]
    seen = (mask[0, 0] == 0).int().tolist()
    assert seen == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 1, 0],
                    [0, 0, 1, 1, 1]]


def test_queries_and_summaries_on_a_merged_copy_run_apart(lm) -> None:  # noqa: ANN001
    """Where routing queries run on a merged bfloat16 copy, the summaries still come from
    the base weights: the two kinds run apart, each on its own module."""
    enc = Encoder(lm, LAYERS, router=_router(lm, trained=True), query_dtype=torch.bfloat16)
    queries, summaries = [_ids(lm, "red blue fox")], [_ids(lm, "a navy dog"), _ids(lm, "gold")]
    top = len(lm.model.model.layers) - 1
    got_q, got_s = enc.queries_and_summaries(queries, summaries, top)
    assert enc._query_model()[0] is not lm.model  # the copy
    torch.testing.assert_close(got_q[0], enc.query_vectors_many(queries)[0])
    torch.testing.assert_close(got_s, Encoder(lm, LAYERS).last_states(summaries, top))
