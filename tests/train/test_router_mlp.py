"""A deeper router (residual MLPs before the projections) on tiny random models: it starts
as the linear router it extends, trains through the routing loss alone, saves and reloads to
the same routing, and the runtime's stored keys equal the training rule's."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from train.test_query_adapter import ADAPTER_RUN, training_setup
from train.test_train import LAYERS, synthetic_pairs

from msa_agent.bench.router_distill import _train_fixed_queries
from msa_agent.model.encoder import Encoder
from msa_agent.model.loader import model_fingerprint
from msa_agent.model.router import Router, residual_mlp
from msa_agent.model.shape import ModelShape
from msa_agent.model.text import query_ids
from msa_agent.runtime.routing import RoutingIndex
from msa_agent.train import HiddenCache, TrainableRouter, TrainConfig, build_dataset, train
from msa_agent.train.live import LiveQueries
from msa_agent.train.score import score_matrix
from msa_agent.train.trainer import TrainReport, batch_loss

WIDTHS = {"q": 16, "k": 16}


def test_residual_mlp_stacked_equals_per_layer() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, 12, generator=gen) * 40  # [N, L, hidden], large states
    down, up = torch.randn(3, 4, 12, generator=gen), torch.randn(3, 12, 4, generator=gen)
    got = residual_mlp(x, down, up)
    for j in range(3):
        torch.testing.assert_close(got[:, j], residual_mlp(x[:, j], down[j], up[j]),
                                   rtol=1e-4, atol=1e-4)
    assert not torch.allclose(got, x)
    # scale-equivariant: the MLP sees unit-RMS states and its output is scaled back
    torch.testing.assert_close(residual_mlp(3 * x, down, up), 3 * got, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(residual_mlp(x, down, torch.zeros_like(up)), x)


def test_added_mlp_starts_as_the_linear_router(lm, cache) -> None:  # noqa: ANN001
    data = build_dataset(cache, synthetic_pairs(6, seed=3))
    linear = TrainableRouter(ModelShape.of(lm.model), LAYERS, rank=None, seed=4, top_tokens=2)
    deeper = TrainableRouter.from_router(linear.to_router(), None, 2, mlp=WIDTHS)
    assert deeper.mlp_widths == WIDTHS and set(deeper.mlp) == {"q_down", "q_up", "k_down",
                                                                 "k_up"}
    want = score_matrix(linear, data.queries, range(6), data.docs, range(6))
    got = score_matrix(deeper, data.queries, range(6), data.docs, range(6))
    torch.testing.assert_close(got, want)


def train_beside_frozen_factors(lm, data, steps: int, lr: float, **extra  # noqa: ANN001
                                ) -> tuple[TrainableRouter, TrainReport]:
    """Continue a rank-8 router with ``extra`` parts added (``mlp=``, ``layer_weights=``),
    its projections frozen; checks that they did not move."""
    base = TrainableRouter(ModelShape.of(lm.model), LAYERS, rank=8, seed=0)
    tr = TrainableRouter.from_router(base.to_router(), 8, 1, **extra)
    frozen = {k: v.detach().clone() for k, v in tr.factors.items()}
    cfg = TrainConfig(steps=steps, batch_size=16, lr=lr, rank=8, hard_negatives=0,
                      frozen=("factors",))
    report = train(data, tr, cfg)
    for k, v in tr.factors.items():
        torch.testing.assert_close(v, frozen[k])
    return tr, report


def test_training_only_the_mlp_moves_it_and_nothing_else(lm, cache) -> None:  # noqa: ANN001
    data = build_dataset(cache, synthetic_pairs(48, seed=1))
    tr, report = train_beside_frozen_factors(lm, data, 15, 1e-2, mlp=WIDTHS)
    assert float(tr.mlp["k_up"].detach().abs().max()) > 0
    assert float(tr.mlp["q_up"].detach().abs().max()) > 0
    assert report.losses[-1] < report.losses[0]


def _trained(lm) -> TrainableRouter:  # noqa: ANN001
    tr = TrainableRouter(ModelShape.of(lm.model), LAYERS, rank=None, seed=6, top_tokens=2,
                         mlp=WIDTHS)
    with torch.no_grad():  # a non-identity MLP, as after training
        gen = torch.Generator().manual_seed(1)
        for k in ("q_up", "k_up"):
            tr.mlp[k].copy_(torch.randn(tr.mlp[k].shape, generator=gen) * 0.3)
    return tr


def test_runtime_keys_and_scores_equal_the_training_rule(lm, cache) -> None:  # noqa: ANN001
    pairs = synthetic_pairs(6, seed=3)
    data = build_dataset(cache, pairs)
    tr = _trained(lm)
    router = tr.to_router()
    assert router.keys_from_pooled
    enc = Encoder(lm, LAYERS, chunk_size=8, router=router)
    docs = enc.encode([query_ids(lm.tokenizer, p.positive, 512) for p in pairs])
    index = RoutingIndex(top_tokens=2)
    index.add([str(i) for i in range(6)], ["ns"] * 6, [d.route_k for d in docs])
    want = score_matrix(tr, data.queries, range(6), data.docs, range(6))
    for qi, p in enumerate(pairs):
        ranked = index.rank(enc.query_vectors(query_ids(lm.tokenizer, p.query, 64)), 6,
                            index.mask_for(None))
        got = dict(zip(ranked.docs, ranked.scores))
        for d in range(6):
            assert got[d] == pytest.approx(float(want[qi, d]), abs=2e-3)  # fp16 cache


def test_saved_deeper_router_reloads_to_identical_routing(lm, tmp_path: Path) -> None:  # noqa: ANN001
    from msa_agent.train import save_router

    tr = _trained(lm)
    path = save_router(tr, tmp_path / "r.safetensors", model_fingerprint(lm), dtype="float32")
    loaded = Router.load(path, model_fingerprint(lm))
    assert loaded.mlp == WIDTHS
    ids = query_ids(lm.tokenizer, "the lazy dog likes green tea", 64)
    for fn in ("query_vectors", "encode"):
        a = getattr(Encoder(lm, LAYERS, router=tr.to_router()), fn)
        b = getattr(Encoder(lm, LAYERS, router=loaded), fn)
        want, got = (a(ids), b(ids)) if fn == "query_vectors" else (
            a([ids])[0].route_k, b([ids])[0].route_k)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    again = TrainableRouter.from_router(loaded, None, 2)
    assert again.mlp_widths == WIDTHS
    torch.testing.assert_close(again.mlp["k_up"], tr.mlp["k_up"])


def test_a_frozen_query_adapter_trains_on_queries_encoded_once(lm, tmp_path) -> None:  # noqa: ANN001
    cache, pairs, data, base, adapter = training_setup(lm, tmp_path, seed=7)
    with torch.no_grad():  # a trained-looking adapter, so its queries differ from the cache's
        g = torch.Generator().manual_seed(2)
        for p in adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    base.adapter = adapter
    tr = TrainableRouter.from_router(base.to_router(), 8, 1, mlp={"k": 16})
    kept = {k: v.detach().clone() for k, v in tr.adapter.state_dict().items()}
    live = LiveQueries(cache.encoder, [query_ids(lm.tokenizer, p.query, 512) for p in pairs],
                       tr.adapter)
    rows = list(range(16))
    with torch.no_grad():
        before = float(batch_loss(tr, data, rows, 0.1, 0, random.Random(0), live=live))
    cfg = replace(ADAPTER_RUN, frozen=("factors", "adapter"))
    report = _train_fixed_queries(data, tr, cfg, live, None)
    assert tr.adapter is not None  # set back after training
    for k, v in tr.adapter.state_dict().items():
        torch.testing.assert_close(v, kept[k])
    with torch.no_grad():
        after = float(batch_loss(tr, data, rows, 0.1, 0, random.Random(0), live=live))
    assert after < before - 0.1, (before, after)
    assert len(report.losses) == ADAPTER_RUN.steps


@pytest.mark.filterwarnings("ignore::msa_agent.runtime.engine.RoutingQualityWarning")
def test_a_space_routes_with_a_deeper_router(lm, tiny_pair, tmp_path) -> None:  # noqa: ANN001
    """Through the API: a space made with a deeper router stores the key MLP's keys of its
    chunk means, and recall ranks as the training rule does."""
    import numpy as np

    from msa_agent import Memory
    from msa_agent.store import Space
    from msa_agent.train import save_router

    tr = _trained(lm)
    path = save_router(tr, tmp_path / "deep.safetensors", model_fingerprint(lm),
                       dtype="float32")
    texts = [f"Fact {i}: the {w} fox met the navy dog at gate {i}."
             for i, w in enumerate(("amber", "coral", "olive", "ivory"))]
    kw = {"model": tiny_pair, "chunk_size": 8, "msa_layers": LAYERS}
    with Memory.open(tmp_path / "m", router_path=str(path), **kw) as mem:
        ids = mem.remember_many(texts)
        hits = mem.recall("coral fox gate", k=4, routing="msa")
    with Space.open(tmp_path / "m") as space:
        stored = np.concatenate(space.read("route_k", space.live_chunks())).astype(np.float32)
    enc = Encoder(lm, LAYERS, chunk_size=8, router=tr.to_router())
    want = torch.cat([d.route_k for d in enc.encode(
        [query_ids(lm.tokenizer, t, 512) for t in texts])]).numpy()
    np.testing.assert_allclose(stored.reshape(want.shape), want, atol=2e-3, rtol=2e-3)
    scores = {h.id: h.score for h in hits}
    cache = HiddenCache(tmp_path / "cache", lm, LAYERS, chunk_size=8, max_doc_tokens=512)
    from msa_agent.train.pairs import Pair

    data = build_dataset(cache, [Pair("coral fox gate", t, group=str(i))
                                 for i, t in enumerate(texts)])
    rule = score_matrix(tr, data.queries, [0], data.docs, range(4))[0]
    for i, mid in enumerate(ids):
        assert scores[mid] == pytest.approx(float(rule[i]), abs=2e-3)
