"""Router distillation: the teacher's top-k, the KL term, the corpus file, validation scoring."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from msa_agent.bench.router_corpus import Corpus, EvalSet, _clean
from msa_agent.bench.router_distill import corpus_dataset, rankings, selection_score, subset
from msa_agent.model.loader import wrap_model
from msa_agent.model.shape import ModelShape
from msa_agent.train.cache import HiddenCache
from msa_agent.train.score import TrainableRouter
from msa_agent.train.teacher import Teacher, bm25_teacher, top_k
from msa_agent.train.trainer import TrainConfig, _teacher_logits, batch_loss, teacher_kl, train

LAYERS = [2, 3]
WORDS = "red blue green amber violet cyan teal olive coral ivory navy plum".split()


@pytest.fixture(scope="module")
def lm(tiny_llama, tokenizer):  # noqa: ANN001, ANN201
    return wrap_model(tiny_llama, tokenizer, name="tiny")


@pytest.fixture(scope="module")
def cache(lm, tmp_path_factory) -> HiddenCache:  # noqa: ANN001
    return HiddenCache(tmp_path_factory.mktemp("cache"), lm, LAYERS, chunk_size=8)


def small_corpus(n: int = 24) -> Corpus:
    c = Corpus()
    for i in range(n):
        a, b = WORDS[i % len(WORDS)], WORDS[(i * 5 + 1) % len(WORDS)]
        d = c.add(f"the {a} fox and the {b} dog number {i}", f"g{i}")
        c.pair(f"{a} {b}", d, "synthetic")
    return c


def test_teacher_kl_is_zero_only_when_the_router_agrees() -> None:
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(4, 6, generator=g)
    teacher[:, 4:] = float("-inf")  # outside the support
    student = teacher.clone()
    student[:, 4:] = torch.randn(4, 2, generator=g) * 100  # ignored: outside the support
    assert float(teacher_kl(student, teacher)) == pytest.approx(0.0, abs=1e-6)
    assert float(teacher_kl(student.flip(1), teacher)) > 0.01


def test_teacher_top_k_is_the_exact_ranking() -> None:
    g = torch.Generator().manual_seed(1)
    q = torch.nn.functional.normalize(torch.randn(7, 5, generator=g), dim=1)
    d = torch.nn.functional.normalize(torch.randn(11, 5, generator=g), dim=1)
    t = top_k(q, d, positives=[3] * 7, k=4, block=3)
    full = q @ d.T
    assert torch.equal(t.idx, full.argsort(dim=1, descending=True)[:, :4])
    assert torch.allclose(t.pos_score, full[:, 3])


def test_bm25_teacher_ranks_by_shared_words() -> None:
    docs = ["the amber fox sleeps", "a violet dog barks", "amber and violet lights",
            "nothing here at all", "the quiet river"]
    t = bm25_teacher(docs, ["amber fox", "violet dog", "zzz qqq"], positives=[0, 1, 4], k=3)
    assert t.idx[0, 0] == 0 and t.idx[1, 0] == 1  # the document sharing both words first
    assert float(t.score[0, 0]) == pytest.approx(1.0) and float(t.score[0].max()) <= 1.0
    assert float(t.pos_score[0]) == pytest.approx(1.0)
    # no shared word: the positive alone
    assert t.idx[2].tolist() == [4, 4, 4] and float(t.pos_score[2]) == 1.0


def test_teacher_file_round_trip(tmp_path: Path) -> None:
    t = Teacher(torch.tensor([[1, 2], [0, 2]]), torch.tensor([[0.5, 0.25], [1.0, 0.0]]),
                torch.tensor([0.5, 1.0]))
    t.save(tmp_path / "t.safetensors")
    back = Teacher.load(tmp_path / "t.safetensors")
    assert torch.equal(back.idx, t.idx) and torch.equal(back.score, t.score)


def test_distillation_moves_the_router_towards_the_teacher(lm, cache) -> None:  # noqa: ANN001
    c = small_corpus()
    # the teacher prefers, for every query, the next document over its own (a rule the
    # router can only learn from the teacher)
    n = len(c.queries)
    idx = torch.tensor([[(i + 1) % n, i] for i in range(n)])
    t = Teacher(idx, torch.tensor([[0.9, 0.5]] * n), torch.full((n,), 0.5))
    data = corpus_dataset(cache, c, t)
    tr = TrainableRouter(ModelShape.of(lm.model), LAYERS, rank=8, seed=0)
    rows = list(range(n))

    def kl() -> float:
        with torch.no_grad():
            cand = {d: j for j, d in enumerate(range(n))}
            logits = _teacher_logits(data, rows, cand, 0.05)
            from msa_agent.train.score import doc_keys, heads_scores, pad_rows, query_features

            keys, gather = doc_keys(tr, data.docs, list(range(n)))
            x, mask = pad_rows(data.queries, rows)
            s = heads_scores(query_features(tr, x), mask, keys, gather, tr.top_tokens)
            return float(teacher_kl(s / 0.1, logits))

    before = kl()
    train(data, tr, TrainConfig(steps=40, batch_size=n, lr=1e-2, rank=8, hard_negatives=0,
                                distill=5.0))
    assert kl() < before - 0.1, (before, kl())


def test_distill_weight_changes_the_loss(lm, cache) -> None:  # noqa: ANN001
    c = small_corpus()
    n = len(c.queries)
    t = Teacher(torch.tensor([[(i + 3) % n] for i in range(n)]), torch.ones(n, 1),
                torch.zeros(n))
    data = corpus_dataset(cache, c, t)
    tr = TrainableRouter(ModelShape.of(lm.model), LAYERS, rank=8, seed=0)
    plain = batch_loss(tr, data, range(8), 0.1, 0, random.Random(0))
    with_kl = batch_loss(tr, data, range(8), 0.1, 0, random.Random(0), distill=1.0)
    assert float(with_kl.detach()) > float(plain.detach())
    with_kl.backward()
    assert all(p.grad is not None for p in tr.parameters())


def test_subset_keeps_the_teacher_rows(lm, cache) -> None:  # noqa: ANN001
    c = small_corpus()
    n = len(c.queries)
    t = Teacher(torch.arange(n)[:, None], torch.ones(n, 1), torch.zeros(n))
    data = corpus_dataset(cache, c, t)
    sub = subset(data, [5, 2])
    assert sub.pos == [data.pos[5], data.pos[2]]
    assert sub.teacher is not None and sub.teacher.idx.flatten().tolist() == [5, 2]
    assert torch.equal(sub.queries.row(0), data.queries.row(5))


def test_corpus_file_round_trip(tmp_path: Path) -> None:
    c = small_corpus(5)
    c.evals = [EvalSet("t", ["a"], ["doc a"], ["ns"], [{"qid": "q", "text": "a?",
                                                          "gold": ["a"], "kind": "k",
                                                          "split": "val", "namespace": "ns"}])]
    c.save(tmp_path / "c.json.gz")
    back = Corpus.load(tmp_path / "c.json.gz")
    assert back == c
    assert back.counts() == {"synthetic": 5}


def test_clean_drops_texts_held_by_a_benchmark_memory() -> None:
    memories = "User: tell me.\nAssistant: The   quick brown fox jumps over the lazy dog."
    texts = ["The quick brown\nfox jumps over the lazy dog.", "Another text entirely.", "  "]
    assert _clean(texts, " ".join(memories.split())) == ["Another text entirely."]


def test_rankings_stay_in_the_query_namespace(lm, cache) -> None:  # noqa: ANN001
    docs = [f"the {w} fox" for w in WORDS[:6]] * 2
    keys = [f"k{i}" for i in range(12)]
    spaces = ["a"] * 6 + ["b"] * 6
    queries = [{"qid": f"q{i}", "text": WORDS[i], "gold": [keys[i + 6 * (i % 2)]],
                "kind": "x", "split": "val", "namespace": spaces[i + 6 * (i % 2)]}
               for i in range(6)]
    e = EvalSet("t", keys, docs, spaces, queries)
    cache.ensure(docs, "doc")
    cache.ensure([q["text"] for q in queries], "query")
    tr = TrainableRouter(ModelShape.of(lm.model), LAYERS, rank=8, seed=0)
    got = rankings(tr, e, cache.packed([q["text"] for q in queries], "query"),
                   cache.packed(docs, "doc"), "val")
    for q, ranking in zip(queries, got[1]):
        own = {k for k, s in zip(keys, spaces) if s == q["namespace"]}
        assert set(ranking) == own  # every own memory, nothing from the other namespace


def test_selection_score_uses_val_all_rows_only() -> None:
    rows = {"a": [{"split": "val", "kind": "all", "r1": 0.5, "r5": 1.0},
                  {"split": "val", "kind": "x", "r1": 0.0, "r5": 0.0}],
            "b": [{"split": "val", "kind": "all", "r1": 0.0, "r5": 0.5},
                  {"split": "test", "kind": "all", "r1": 1.0, "r5": 1.0}]}
    assert selection_score(rows) == pytest.approx((0.75 + 0.25) / 2)
