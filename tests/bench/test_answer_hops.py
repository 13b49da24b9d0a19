"""The two-hop / changed-fact answer bench: which questions it asks and how it sums up."""

from __future__ import annotations

import pytest
import typer

from msa_agent.bench import answer_hops
from msa_agent.bench.tasks.base import Query, Stage, Task


def _q(qid: str, kind: str, split: str, hops: int = 1, metric: str = "all",
       answer: str | None = "x") -> Query:
    return Query(qid, "q?", ("m",), kind, split, "ns", metric, hops, answer)


def test_questions_are_multi_hop_or_changed_facts_of_the_split_capped_per_kind() -> None:
    qs = [_q("a", "single-hop", "test"), _q("b", "two-hop", "test", hops=2),
          _q("c", "two-hop", "test", hops=2), _q("d", "two-hop", "test", hops=2),
          _q("e", "update", "test", metric="newest"), _q("f", "two-hop", "val", hops=2),
          _q("g", "update", "test", metric="newest", answer=None)]
    task = Task("t", "a test task", (Stage("s", (), tuple(qs)),))
    got = answer_hops.questions(task, "test", per_kind=2)
    assert [q.qid for q in got] == ["b", "c", "e"]  # capped at 2, no single-hop, val, or gold-less
    every = answer_hops.questions(task, "test", per_kind=2, every_kind=True)
    assert [q.qid for q in every] == ["a", "b", "c", "e"]


def test_summary_counts_accuracy_per_task_kind_and_system() -> None:
    rows = [{"task": "t", "kind": "two-hop", "system": s, "correct": c}
            for s, c in [("a", True), ("a", False), ("b", False), ("b", 0.0)]]
    got = {(r["system"], r["n"]): r["accuracy"] for r in answer_hops.summary(rows)}
    assert got == {("a", 2): 0.5, ("b", 2): 0.0}


def test_settings_parse_json_values_and_refuse_a_missing_value() -> None:
    got = answer_hops.parse_settings(["read_superseded=false", "answer_k=3"])
    assert got == {"read_superseded": False, "answer_k": 3}
    with pytest.raises(typer.BadParameter, match="NAME=VALUE"):
        answer_hops.parse_settings(["read_superseded"])
