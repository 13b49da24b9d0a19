"""Metrics on hand-made rankings."""

from __future__ import annotations

import math

from msa_agent.bench import metrics
from msa_agent.bench.tasks.base import Query


def q(gold: tuple[str, ...], split: str = "test", kind: str = "k", metric: str = "all") -> Query:
    return Query("q", "text", gold, kind, split, "ns", metric=metric)


def test_single_gold_recall_at_k() -> None:
    query = q(("a",))
    assert metrics.hit_at(["a", "b"], query, 1)
    assert not metrics.hit_at(["b", "a"], query, 1)
    assert metrics.hit_at(["b", "c", "d", "e", "a"], query, 5)
    assert not metrics.hit_at(["b", "c", "d", "e", "f", "a"], query, 5)


def test_multi_gold_needs_all_in_top_k() -> None:
    query = q(("a", "b"))
    assert not metrics.hit_at(["a", "x", "y", "z", "w", "b"], query, 5)
    assert metrics.hit_at(["x", "b", "y", "a"], query, 5)
    assert not metrics.hit_at(["a"], query, 1)


def test_newest_first() -> None:
    query = q(("new", "old"), metric="newest")
    assert metrics.newest_first(["new", "old"], query)
    assert not metrics.newest_first(["old", "new"], query)
    assert metrics.newest_first(["x", "new"], query)  # old outside the top k counts as below
    assert not metrics.newest_first(["old", "x"], query)
    assert not metrics.newest_first(["x", "y", "z", "w", "v", "new"], query)
    # recall@k of a changed fact is about the new memory only
    assert metrics.hit_at(["new"], query, 1)
    assert not metrics.hit_at(["old", "new"], query, 1)


def test_percentile_nearest_rank() -> None:
    assert metrics.percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert metrics.percentile([float(i) for i in range(1, 101)], 95) == 95.0
    assert metrics.percentile([5.0], 95) == 5.0
    assert math.isnan(metrics.percentile([], 50))


def test_score_groups_by_split_and_kind() -> None:
    queries = [q(("a",), "val", "x"), q(("b",), "val", "y"), q(("c",), "test", "x"),
               q(("n", "o"), "test", "u", "newest")]
    rankings = [["a"], ["z", "b"], ["z"], ["o", "n"]]
    rows = {(r["split"], r["kind"]): r for r in metrics.score(queries, rankings)}
    assert rows["val", "x"] == {"split": "val", "kind": "x", "n": 1, "r1": 1.0, "r5": 1.0}
    assert rows["val", "y"]["r1"] == 0.0 and rows["val", "y"]["r5"] == 1.0
    assert rows["val", "all"]["n"] == 2 and rows["val", "all"]["r1"] == 0.5
    assert rows["test", "all"]["r5"] == 0.5
    assert rows["test", "u"]["newest_first"] == 0.0
    assert "newest_first" not in rows["test", "x"]


def test_normalize_answer_squad_style() -> None:
    assert metrics.normalize_answer("The  Blue, Fox!") == "blue fox"
    assert metrics.normalize_answer("An apple a day") == "apple day"
    assert metrics.normalize_answer("Theory") == "theory"  # only whole-word articles


def test_token_f1_known_values() -> None:
    # "the Blue Fox" -> [blue, fox]; "blue fox jumps": precision 2/3, recall 1 -> F1 0.8
    assert metrics.token_f1("blue fox jumps", "the Blue Fox") == 0.8
    assert metrics.token_f1("the Blue Fox", "blue fox jumps") == 0.8  # symmetric
    # one shared token of 2 and 4: P 1/2, R 1/4 -> 2 * 1/8 / (3/4) = 1/3
    assert math.isclose(metrics.token_f1("red car", "a red old blue truck"), 1 / 3)
    assert metrics.token_f1("Lisbon.", "lisbon") == 1.0
    assert metrics.token_f1("nothing alike", "Lisbon") == 0.0
    assert metrics.token_f1("", "Lisbon") == 0.0 and metrics.token_f1("the", "a") == 0.0


def test_answer_hit_is_whole_word_containment() -> None:
    assert metrics.answer_hit("It is Dr. Brakel Vourn, I think.", "Brakel Vourn")
    assert metrics.answer_hit("The answer: LISBON", "lisbon")
    assert not metrics.answer_hit("Lisbonne", "Lisbon")  # not inside another word
    assert not metrics.answer_hit("Vourn Brakel", "Brakel Vourn")
    assert not metrics.answer_hit("anything", "the")  # empty after normalisation


def test_score_answers_counts_skips_and_keeps_them_out_of_the_means() -> None:
    def out(split: str, correct: bool, f1: float, ms: float) -> dict:
        return {"split": split, "kind": "k", "skipped": False, "correct": correct, "f1": f1,
                "ms": ms, "truncated": False, "gold_in_context": correct, "prompt_tokens": 10}

    outs = [out("test", True, 1.0, 10.0), out("test", False, 0.5, 30.0),
            {"split": "test", "kind": "k", "skipped": "does not fit", "prompt_tokens": 9000}]
    rows = {(r["split"], r["kind"]): r for r in metrics.score_answers(outs)}
    r = rows["test", "all"]
    assert (r["n"], r["answered"], r["skipped"]) == (3, 2, 1)
    assert r["accuracy"] == 0.5 and r["f1"] == 0.75 and r["gold_in_context"] == 0.5
    assert r["p50_ms"] == 10.0 and r["p95_ms"] == 30.0 and r["prompt_tokens"] == 10
    only_skipped = metrics.score_answers([outs[2]])[0]
    assert only_skipped["accuracy"] is None and only_skipped["p50_ms"] is None
