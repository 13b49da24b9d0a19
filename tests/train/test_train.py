"""Router training on tiny random models: the loss, the rule, files, re-encoding, pair builders."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from msa_agent.errors import InvalidInputError, RouterMismatchError
from msa_agent.model.encoder import Encoder
from msa_agent.model.loader import model_fingerprint, wrap_model
from msa_agent.model.router import Router
from msa_agent.model.shape import ModelShape
from msa_agent.model.text import query_ids
from msa_agent.runtime.routing import RoutingIndex
from msa_agent.train import (
    Pair,
    TrainableRouter,
    TrainConfig,
    build_dataset,
    inverse_cloze,
    pair_loss,
    read_pairs_jsonl,
    save_router,
    split_sentences,
    train,
)
from msa_agent.train.score import score_matrix

LAYERS = [2, 3]
WORDS = ("red blue green amber violet cyan teal olive coral ivory navy plum lime gold rose "
         "jade ruby onyx opal pearl").split()


def synthetic_pairs(n: int, seed: int) -> list[Pair]:
    """A query names two words; its document uses both (learnable by routing, not by chance)."""
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n):
        a, b = rng.choice(len(WORDS), 2, replace=False)
        doc = f"the {WORDS[a]} fox and the {WORDS[b]} dog {i}"
        pairs.append(Pair(f"{WORDS[a]} {WORDS[b]}", doc, group=str(i)))
    return pairs


def test_training_lowers_held_out_loss(lm, cache) -> None:  # noqa: ANN001
    data = build_dataset(cache, synthetic_pairs(64, seed=1))
    held = build_dataset(cache, synthetic_pairs(32, seed=2))  # other word pairs, other docs
    tr = TrainableRouter(ModelShape.of(lm.model), LAYERS, rank=8, seed=0)
    before = pair_loss(tr, held, batch_size=16)
    cfg = TrainConfig(steps=40, batch_size=16, lr=1e-2, rank=8, hard_negatives=1,
                      mine_start=10, mine_every=10, mine_top=4)
    report = train(data, tr, cfg)
    after = pair_loss(tr, held, batch_size=16)
    assert after < before - 0.5, (before, after)
    assert report.peak_rss_mb > 0 and len(report.losses) == 40


@pytest.mark.parametrize("top", [1, 2])
def test_training_score_equals_runtime_rule(lm, cache, top: int) -> None:  # noqa: ANN001
    pairs = synthetic_pairs(6, seed=3)
    data = build_dataset(cache, pairs)
    tr = TrainableRouter(ModelShape.of(lm.model), LAYERS, rank=None, seed=4, top_tokens=top)
    router = tr.to_router()
    enc = Encoder(lm, LAYERS, chunk_size=8, router=router)
    index = RoutingIndex(top_tokens=top)
    docs = enc.encode([query_ids(lm.tokenizer, p.positive, 512) for p in pairs])
    index.add([str(i) for i in range(len(pairs))], ["ns"] * len(pairs), [d.route_k for d in docs])
    want = score_matrix(tr, data.queries, range(len(pairs)), data.docs, range(len(pairs)))
    for qi, p in enumerate(pairs):
        q = enc.query_vectors(query_ids(lm.tokenizer, p.query, 64))
        ranked = index.rank(q, len(pairs), index.mask_for(None))
        got = dict(zip(ranked.docs, ranked.scores))
        for d in range(len(pairs)):
            assert got[d] == pytest.approx(float(want[qi, d]), abs=2e-3)  # fp16 cache


@pytest.mark.parametrize("rank", [None, 4])
def test_saved_router_reloads_to_identical_routing(lm, tmp_path: Path, rank) -> None:  # noqa: ANN001
    tr = TrainableRouter(ModelShape.of(lm.model), LAYERS, rank=rank, seed=5)
    path = save_router(tr, tmp_path / "r.safetensors", model_fingerprint(lm), dtype="float32")
    loaded = Router.load(path, model_fingerprint(lm))
    ids = query_ids(lm.tokenizer, "green amber fox", 64)
    want = Encoder(lm, LAYERS, router=tr.to_router()).query_vectors(ids)
    got = Encoder(lm, LAYERS, router=loaded).query_vectors(ids)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    doc = query_ids(lm.tokenizer, "the lazy dog likes green tea", 64)
    k1 = Encoder(lm, LAYERS, router=tr.to_router()).encode([doc])[0].route_k
    k2 = Encoder(lm, LAYERS, router=loaded).encode([doc])[0].route_k
    torch.testing.assert_close(k2, k1, atol=1e-5, rtol=1e-5)


def test_router_for_another_model_is_refused(lm, tokenizer, tmp_path: Path) -> None:  # noqa: ANN001
    from tests_helpers import make_llama

    tr = TrainableRouter(ModelShape.of(lm.model), LAYERS, rank=4)
    path = save_router(tr, tmp_path / "r.safetensors", model_fingerprint(lm))
    other = wrap_model(make_llama(seed=7), tokenizer, name="other")
    with pytest.raises(RouterMismatchError):
        Router.load(path, model_fingerprint(other))


def test_fp16_low_rank_file_is_small(lm, tmp_path: Path) -> None:  # noqa: ANN001
    shape = ModelShape.of(lm.model)
    full = save_router(TrainableRouter(shape, LAYERS, None), tmp_path / "f.safetensors",
                       model_fingerprint(lm), dtype="float32")
    low = save_router(TrainableRouter(shape, LAYERS, 4), tmp_path / "l.safetensors",
                      model_fingerprint(lm), dtype="float16")
    assert low.stat().st_size < full.stat().st_size / 2


# ---------------------------------------------------------------- pair builders
def test_inverse_cloze_edge_cases() -> None:
    assert inverse_cloze([]) == []
    assert inverse_cloze([""]) == []
    assert inverse_cloze(["   "]) == []
    assert inverse_cloze(["Only one sentence here, and it is long enough."]) == []
    assert inverse_cloze(["Short. Tiny."]) == []  # no sentence long enough to be a query


def test_inverse_cloze_query_is_removed_from_positive() -> None:
    text = ("Ada Lovelace wrote the first program. She worked with Charles Babbage. "
            "The Analytical Engine was never built in her lifetime.")
    pairs = inverse_cloze([text, text], per_passage=2, seed=3)
    assert len(pairs) == 4
    for p in pairs:
        assert p.query in split_sentences(text)
        assert p.query not in p.positive
        assert len(split_sentences(p.positive)) == 2
    assert {p.group for p in pairs} == {"passage-0", "passage-1"}
    assert pairs == inverse_cloze([text, text], per_passage=2, seed=3)  # deterministic


def test_split_sentences_keeps_abbreviated_numbers() -> None:
    assert split_sentences("It rose 3.5 percent. Then it fell!  Why? 2020 was odd.") == [
        "It rose 3.5 percent.", "Then it fell!", "Why?", "2020 was odd."]


def test_read_pairs_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    rows = [{"query": "q1", "positive": "doc one", "negatives": ["doc two", "doc one"]},
            {"query": "q2", "positive": "doc two"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    pairs = read_pairs_jsonl(path)
    assert pairs[0].negatives == ("doc two",)  # the positive is never its own negative
    assert pairs[1] == Pair("q2", "doc two")
    path.write_text('{"query": "", "positive": "x"}\n')
    with pytest.raises(InvalidInputError, match="p.jsonl:1"):
        read_pairs_jsonl(path)


@pytest.mark.parametrize("top", [1, 3])
def test_training_scores_are_the_kernel_reference(lm, cache, top: int) -> None:  # noqa: ANN001
    """The loss's padded, batched document scores equal ``route_topk_ref`` (the kernel's
    contract, naive.py) on each query's layers-as-heads ``[T, L*Hq, D]`` against each
    document's ``[C, L*Hkv, D]``; and they back-propagate into the router."""
    from msa_agent.kernels.route_topk.naive import route_topk_ref
    from msa_agent.train.trainer import batch_loss

    data = build_dataset(cache, synthetic_pairs(5, seed=6))
    tr = TrainableRouter(ModelShape.of(lm.model), LAYERS, rank=None, seed=2, top_tokens=top)
    got = score_matrix(tr, data.queries, range(5), data.docs, range(5), block=2)
    with torch.no_grad():
        for qi in range(5):
            q = tr.project(data.queries.row(qi), "q").flatten(1, 2)[None]  # [1, T, L*Hq, D]
            for d in range(5):
                k = tr.project(data.docs.row(d), "k").flatten(1, 2)  # [C, L*Hkv, D]
                _, val, _ = route_topk_ref(q, k, torch.zeros(len(k), dtype=torch.long), 1, 1,
                                           top_tokens=top)
                assert float(got[qi, d]) == pytest.approx(float(val[0, 0]), abs=1e-5)
    batch_loss(tr, data, range(5), 0.1, 0, random.Random(0)).backward()
    assert all(float(p.grad.abs().sum()) > 0 for p in tr.parameters())
