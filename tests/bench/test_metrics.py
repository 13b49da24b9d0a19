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
