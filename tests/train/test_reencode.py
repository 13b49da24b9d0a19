"""Re-encoding routing keys after a router change: equal to a fresh encode, K/V untouched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from msa_agent import Memory
from msa_agent.model.loader import model_fingerprint, wrap_model
from msa_agent.model.shape import ModelShape
from msa_agent.store import Space
from msa_agent.train import TrainableRouter, save_router

LAYERS = [2, 3]
TEXTS = ["Paris is the capital of France.", "Alice works for Acme in Lisbon. " * 3,
         "Bob likes green tea and quick brown foxes."]
pytestmark = pytest.mark.filterwarnings("ignore::msa_agent.runtime.engine.RoutingQualityWarning")


def _router(pair, tmp_path: Path, seed: int) -> Path:  # noqa: ANN001
    lm = wrap_model(*pair)
    tr = TrainableRouter(ModelShape.of(lm.model), LAYERS, rank=4, seed=seed)
    return save_router(tr, tmp_path / f"r{seed}.safetensors", model_fingerprint(lm))


def _open(path: Path, pair, router: Path | None) -> Memory:  # noqa: ANN001
    kw = {"router_path": str(router)} if router else {"routing": "own_qk"}
    return Memory.open(path, model=pair, chunk_size=8, max_doc_tokens=256, msa_layers=LAYERS, **kw)


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with Space.open(path) as space:
        rows = space.live_chunks()
        return {n: np.concatenate(space.read(n, rows)) for n in ("route_k", "pooled_k", "pooled_v")}


@pytest.mark.parametrize("how", ["method", "reopen"])
def test_reencode_equals_fresh_encode_and_keeps_kv(tmp_path: Path, tiny_pair, how: str) -> None:
    new = _router(tiny_pair, tmp_path, seed=1)
    with _open(tmp_path / "old", tiny_pair, None) as mem:
        mem.remember_many(TEXTS)
    before = _arrays(tmp_path / "old")
    if how == "method":
        with _open(tmp_path / "old", tiny_pair, None) as mem:
            assert mem.reencode_routing(new) == len(TEXTS)
            hits = [h.text for h in mem.recall("capital of France", k=3)]
    else:  # opening with another router re-encodes by itself
        with _open(tmp_path / "old", tiny_pair, new) as mem:
            hits = [h.text for h in mem.recall("capital of France", k=3)]
    with _open(tmp_path / "fresh", tiny_pair, new) as mem:
        mem.remember_many(TEXTS)
        want_hits = [h.text for h in mem.recall("capital of France", k=3)]
    after, fresh = _arrays(tmp_path / "old"), _arrays(tmp_path / "fresh")
    assert not np.allclose(after["route_k"], before["route_k"])
    np.testing.assert_allclose(after["route_k"], fresh["route_k"], rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(after["pooled_k"], before["pooled_k"])
    np.testing.assert_array_equal(after["pooled_v"], before["pooled_v"])
    assert hits == want_hits


def test_reencode_without_change_is_idempotent(tmp_path: Path, tiny_pair) -> None:
    router = _router(tiny_pair, tmp_path, seed=2)
    with _open(tmp_path / "m", tiny_pair, router) as mem:
        mem.remember_many(TEXTS)
    before = _arrays(tmp_path / "m")["route_k"]
    with _open(tmp_path / "m", tiny_pair, router) as mem:
        assert mem.reencode_routing() == len(TEXTS)
        assert mem.stats().routing == "learned"
    np.testing.assert_allclose(_arrays(tmp_path / "m")["route_k"], before, rtol=1e-3, atol=1e-3)


def test_memory_pairs_come_from_stored_texts(tmp_path: Path, tiny_pair) -> None:
    from msa_agent.train import memory_pairs

    story = "Ada wrote the first program. She worked with Charles Babbage on his engine."
    with _open(tmp_path / "m", tiny_pair, None) as mem:
        mem.remember_many([story, "One short line only."])
    pairs = memory_pairs(tmp_path / "m", entities=0)
    assert len(pairs) == 1
    assert pairs[0].query in story and pairs[0].positive in story
    assert pairs[0].query not in pairs[0].positive
    named = memory_pairs(tmp_path / "m")[1:]  # plus entity-keyed questions (default 2 each)
    # "Ada" opens its sentence (a capital there says nothing): only the mid-sentence name
    assert [p.positive for p in named] == [story] and "Charles Babbage" in named[0].query


def test_entity_pairs_name_unique_entities_only() -> None:
    from msa_agent.train import entity_pairs, name_spans

    docs = ["Vrai Thorn joined Kusgush Labs in 2003.", "Kusgush Labs is based in Rersou.",
            "The river is long."]
    assert name_spans(docs[0]) == ["Vrai Thorn", "Kusgush Labs"]
    pairs = entity_pairs(docs, per_passage=3)
    # "Kusgush Labs" is in two documents (no single positive), the third names nobody
    assert len(pairs) == 2 and {p.positive for p in pairs} == {docs[0], docs[1]}
    by_doc = {p.positive: p.query for p in pairs}
    assert "Vrai Thorn" in by_doc[docs[0]] and "Rersou" in by_doc[docs[1]]
    assert all("Kusgush" not in p.query for p in pairs)


def test_router_continues_from_a_low_rank_router_exactly(tiny_llama) -> None:
    from msa_agent.model.router import Router
    from msa_agent.model.shape import ModelShape
    from msa_agent.train import TrainableRouter

    torch.manual_seed(0)
    low = TrainableRouter(ModelShape.of(tiny_llama), [2, 3], rank=4)
    router = low.to_router()
    again = TrainableRouter.from_router(router, rank=4)
    full = TrainableRouter.from_router(router)
    for kind in ("q", "k"):
        torch.testing.assert_close(again.weight(kind), low.weight(kind), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(full.weight(kind), low.weight(kind))
    assert isinstance(router, Router)
