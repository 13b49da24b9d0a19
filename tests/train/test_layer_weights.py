"""A router's learned per-layer weights (issue 13, "a learned per-layer weight"): the rule's
mean over layers becomes a weighted mean, defined once (``fold_layers_as_heads``), trained
through the routing loss, saved with the router and applied by the runtime's index."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from train.test_router_mlp import train_beside_frozen_factors
from train.test_train import LAYERS, synthetic_pairs

from msa_agent.kernels.route_topk.naive import fold_layers_as_heads, unit
from msa_agent.model.encoder import Encoder
from msa_agent.model.loader import model_fingerprint
from msa_agent.model.router import Router
from msa_agent.model.shape import ModelShape
from msa_agent.model.text import query_ids
from msa_agent.runtime.routing import RoutingIndex
from msa_agent.train import TrainableRouter, build_dataset, save_router
from msa_agent.train.score import score_matrix
from msa_agent.train.trainer import pair_loss


def test_weighted_fold_is_the_weighted_mean_of_layer_cosines() -> None:
    """Oracle: the literal sum over layers of w_l times the mean over heads of the cosine,
    divided by L (w has mean 1), against the folded GEMM."""
    gen = torch.Generator().manual_seed(0)
    L, hq, hkv, d = 3, 4, 2, 8
    q = torch.randn(5, L, hq, d, generator=gen)  # [T, L, Hq, D]
    k = torch.randn(L, hkv, d, generator=gen)  # one chunk [L, Hkv, D]
    w = torch.tensor([0.2, 1.3, 1.5])
    cos = torch.nn.functional.cosine_similarity(
        q, k.repeat_interleave(hq // hkv, dim=1)[None], dim=-1)  # [T, L, Hq]
    want = (cos.mean(-1) * w).mean(-1)  # [T]
    got = (fold_layers_as_heads(q, hkv, w)[:, 0, 0] * unit(k).flatten()).sum(-1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    equal = (fold_layers_as_heads(q, hkv)[:, 0, 0] * unit(k).flatten()).sum(-1)
    torch.testing.assert_close(equal, cos.mean((-1, -2)), rtol=1e-5, atol=1e-6)


def test_zero_logits_score_as_the_equal_rule(lm, cache) -> None:  # noqa: ANN001
    data = build_dataset(cache, synthetic_pairs(6, seed=3))
    plain = TrainableRouter(ModelShape.of(lm.model), LAYERS, rank=None, seed=4, top_tokens=2)
    weighted = TrainableRouter.from_router(plain.to_router(), None, 2, layer_weights=True)
    torch.testing.assert_close(weighted.layer_weight(), torch.ones(len(LAYERS)))
    torch.testing.assert_close(
        score_matrix(weighted, data.queries, range(6), data.docs, range(6)),
        score_matrix(plain, data.queries, range(6), data.docs, range(6)))


def test_training_only_the_weights_moves_them_and_nothing_else(lm, cache) -> None:  # noqa: ANN001
    data = build_dataset(cache, synthetic_pairs(48, seed=1))
    # the equal rule's loss: what the weights start from (the same router, weights at 1)
    equal = TrainableRouter(ModelShape.of(lm.model), LAYERS, rank=8, seed=0)
    before = pair_loss(TrainableRouter.from_router(equal.to_router(), 8, 1), data)
    tr, _ = train_beside_frozen_factors(lm, data, 30, 5e-2, layer_weights=True)
    weight = tr.layer_weight().detach()
    assert float((weight - 1).abs().max()) > 1e-3  # moved off the equal weights
    torch.testing.assert_close(weight.mean(), torch.tensor(1.0))
    assert pair_loss(tr, data) < before  # the same fixed batches, scored before and after


def _weighted(lm) -> TrainableRouter:  # noqa: ANN001
    tr = TrainableRouter(ModelShape.of(lm.model), LAYERS, rank=None, seed=6, top_tokens=2,
                         layer_weights=True)
    with torch.no_grad():  # uneven weights, as after training
        tr.layer_logit.copy_(torch.linspace(-1.5, 1.0, len(LAYERS)))
    return tr


def test_saved_weights_reload_and_continue(lm, tmp_path: Path) -> None:  # noqa: ANN001
    tr = _weighted(lm)
    path = save_router(tr, tmp_path / "r.safetensors", model_fingerprint(lm))
    loaded = Router.load(path, model_fingerprint(lm))
    torch.testing.assert_close(loaded.layer_weight, tr.layer_weight().detach())
    unweighted = tr.to_router()
    unweighted.layer_weight = None
    assert unweighted.router_id != tr.to_router().router_id  # the weights are its identity
    again = TrainableRouter.from_router(loaded, None, 2)
    torch.testing.assert_close(again.layer_weight(), tr.layer_weight(), atol=1e-6, rtol=1e-5)
    backwards = list(reversed(loaded.layer_ids))
    torch.testing.assert_close(loaded.layer_weight_for(backwards),
                               loaded.layer_weight.flip(0))


def test_a_weight_of_the_wrong_length_is_refused(lm) -> None:  # noqa: ANN001
    from msa_agent.errors import RouterMismatchError

    with pytest.raises(RouterMismatchError, match="layer_weight"):
        Router(ModelShape.of(lm.model), LAYERS, layer_weight=torch.ones(len(LAYERS) + 1))


def test_runtime_index_scores_equal_the_training_rule(lm, cache) -> None:  # noqa: ANN001
    pairs = synthetic_pairs(6, seed=3)
    data = build_dataset(cache, pairs)
    tr = _weighted(lm)
    router = tr.to_router()
    enc = Encoder(lm, LAYERS, chunk_size=8, router=router)
    docs = enc.encode([query_ids(lm.tokenizer, p.positive, 512) for p in pairs])
    index = RoutingIndex(top_tokens=2, layer_weight=router.layer_weight_for(LAYERS))
    index.add([str(i) for i in range(6)], ["ns"] * 6, [d.route_k for d in docs])
    want = score_matrix(tr, data.queries, range(6), data.docs, range(6))
    for qi, p in enumerate(pairs):
        q = enc.query_vectors(query_ids(lm.tokenizer, p.query, 64))
        ranked = index.rank(q, 6, index.mask_for(None))
        got = dict(zip(ranked.docs, ranked.scores))
        for d in range(6):
            assert got[d] == pytest.approx(float(want[qi, d]), abs=2e-3)  # fp16 cache
        # explain's combined score is the ranking's, weighted too
        shown = index.explain([str(d) for d in range(6)], q, evidence=False)
        for d, s in zip(shown.docs, shown.scores):
            assert s == pytest.approx(got[d], abs=1e-5)
