"""Baseline adapters and the runner on hand-made data (no model: BM25 and fakes only)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from msa_agent.bench import suite, systems
from msa_agent.bench.tasks.base import MemoryItem, Query, Stage, Task

needs_bm25 = pytest.mark.skipif(importlib.util.find_spec("bm25s") is None,
                                reason="pip install -e '.[bench]'")

MEMS = [MemoryItem("a", "the violin lesson is on tuesday", "u1"),
        MemoryItem("b", "the dentist appointment is on friday", "u1"),
        MemoryItem("c", "the violin lesson is on monday", "u2")]


def test_dedupe_keeps_order_and_k() -> None:
    assert systems.dedupe(["a", "b", "a", "c", "d"], 3) == ["a", "b", "c"]
    assert systems.dedupe([], 5) == []


def test_windows_cover_every_line() -> None:
    text = "\n".join(f"line {i} says something." for i in range(10))
    wins = systems.windows(text)
    assert all(len(w.splitlines()) <= 4 for w in wins)
    covered = {line for w in wins for line in w.splitlines()}
    assert covered == set(text.splitlines())
    assert systems.windows("one short line") == ["one short line"]
    long_line = " ".join(f"Sentence number {i} is here." for i in range(60))
    assert len(systems.windows(long_line)) > 1


@needs_bm25
def test_bm25_respects_namespaces() -> None:
    bm25 = systems.BM25()
    bm25.add(MEMS)
    q = Query("q", "when is the violin lesson", ("a",), "k", "test", "u1")
    assert bm25.search(q, 5, {})[0] == "a"
    assert "c" not in bm25.search(q, 5, {})
    other = Query("q2", "violin lesson", ("c",), "k", "test", "u2")
    assert bm25.search(other, 5, {}) == ["c"]
    assert bm25.search(Query("q3", "violin", (), "k", "test", "nobody"), 5, {}) == []
    bm25.add([MemoryItem("d", "violin violin lesson", "u1")])  # re-indexed lazily
    assert "d" in bm25.search(q, 5, {})


class FakeSystem:
    """Returns each query's gold for variant 'good' and nothing for 'bad'."""

    name = "fake"

    def __init__(self) -> None:
        self.added: list[list[str]] = []

    def add(self, items: Any) -> None:
        self.added.append([m.key for m in items])

    def variants(self) -> dict[str, dict[str, Any]]:
        return {"fake good": {"good": True}, "fake bad": {"good": False}}

    def search(self, query: Query, k: int, opts: dict[str, Any]) -> list[str]:
        return list(query.gold) if opts["good"] else []

    def index_bytes(self) -> int | None:
        return 100

    def close(self) -> None:
        pass


def tiny_task() -> Task:
    q1 = Query("q1", "x", ("a",), "k", "val", "u1")
    q2 = Query("q2", "y", ("b",), "k", "test", "u1")
    return Task("tiny", "tiny", (Stage("1", tuple(MEMS[:2]), (q1, q2)),
                                 Stage("2", tuple(MEMS), (q1, q2))))


def test_runner_incremental_stages_and_rows(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    fake = FakeSystem()
    monkeypatch.setattr(suite, "make_system", lambda *a: fake)
    cfg = suite.RunConfig(tasks=["tiny"], systems=["fake"], workdir=tmp_path, log=lambda m: None)
    quality, costs = suite.run_task_system(tiny_task(), "fake", cfg, [10, 15])
    assert fake.added == [["a", "b"], ["c"]]  # only new memories at each stage
    good = [r for r in quality if r["system"] == "fake good"]
    assert {r["r1"] for r in good} == {1.0}
    assert {r["r5"] for r in quality if r["system"] == "fake bad"} == {0.0}
    assert [c["tokens"] for c in costs if c["system"] == "fake good"] == [10, 15]
    assert all(c["bytes_per_token"] == 100 / c["tokens"] for c in costs)


def test_run_writes_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(suite, "make_system", lambda *a: FakeSystem())
    monkeypatch.setattr(suite, "build_task", lambda name, mode, **kw: tiny_task())
    monkeypatch.setattr(suite, "count_tokens", lambda texts: sum(len(t.split()) for t in texts))
    doc = suite.run(suite.RunConfig(tasks=["tiny"], systems=["fake"], workdir=tmp_path,
                                    log=lambda m: None))
    path = suite.write(doc, tmp_path / "r.json")
    back = json.loads(path.read_text())
    assert back["tasks"]["tiny"]["stages"][1]["memories"] == 3
    assert back["machine"]["cpus"] >= 1 and back["quality"] and back["costs"]
    from msa_agent.bench import report

    assert "fake good" in report.markdown_summary(back)
    assert "| 1 | k |" in report.markdown_kinds(back, "tiny")
    pngs = report.plots(back, tmp_path, "t")
    assert all(p.exists() for p in pngs) and len(pngs) == 2  # bars + the 2-stage curve


class CutShort(FakeSystem):
    """A system whose second stage's ingest is killed (a run stopped mid-way)."""

    def add(self, items: Any) -> None:
        if self.added:
            raise KeyboardInterrupt
        super().add(items)


def test_a_run_cut_short_keeps_its_finished_stages(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    monkeypatch.setattr(suite, "make_system", lambda *a: CutShort())
    monkeypatch.setattr(suite, "build_task", lambda name, mode, **kw: tiny_task())
    monkeypatch.setattr(suite, "count_tokens", lambda texts: sum(len(t.split()) for t in texts))
    written: list[dict[str, Any]] = []
    cfg = suite.RunConfig(tasks=["tiny"], systems=["fake"], workdir=tmp_path,
                          log=lambda m: None, on_task=written.append)
    with pytest.raises(KeyboardInterrupt):
        suite.run(cfg)
    assert {r["stage"] for r in written[-1]["quality"]} == {"1"}  # stage 1 survived
    assert {c["system"] for c in written[-1]["costs"]} == {"fake good", "fake bad"}


def test_msa_variants_follow_recall_signature(monkeypatch: pytest.MonkeyPatch) -> None:
    auto = {"hops": "auto", "multihop_only": True}
    monkeypatch.setattr(systems, "routing_modes", lambda: [])
    assert systems.default_msa_variants() == {"msa-agent": {}, "msa-agent hops=auto": auto}
    monkeypatch.setattr(systems, "routing_modes", lambda: ["hybrid", "msa", "lexical"])
    assert systems.default_msa_variants() == {
        "msa-agent hybrid": {"routing": "hybrid"}, "msa-agent msa": {"routing": "msa"},
        "msa-agent lexical": {"routing": "lexical"},
        "msa-agent hops=auto": {"routing": "hybrid", **auto}}


def test_multihop_only_variant_asks_only_multihop_questions() -> None:
    one = Query("a", "x", ("a",), "k", "val", "u")
    two = Query("b", "y", ("a", "b"), "k2", "val", "u", hops=2)
    assert suite._queries_for([one, two], {}) == [one, two]
    assert suite._queries_for([one, two], {"multihop_only": True}) == [two]
    assert suite._queries_for([one], {"multihop_only": True}) == []


def test_run_with_answers_adds_the_answer_stage(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    """The recall stage's rankings reach the answer stage; the document gains its lists."""
    from msa_agent.bench import answer_stage

    seen: dict[str, Any] = {}

    def fake_add_to(doc: dict, task: Task, rankings: dict, space: Any, per_split: int,
                    log: Any) -> None:
        seen.update(rankings=rankings, space=space, per_split=per_split)
        doc["answers"].append({"task": task.name})

    monkeypatch.setattr(suite, "make_system", lambda *a: FakeSystem())
    monkeypatch.setattr(suite, "build_task", lambda name, mode, **kw: tiny_task())
    monkeypatch.setattr(suite, "count_tokens", lambda texts: sum(len(t.split()) for t in texts))
    monkeypatch.setattr(answer_stage, "add_to", fake_add_to)
    doc = suite.run(suite.RunConfig(tasks=["tiny"], systems=["fake"], workdir=tmp_path,
                                    log=lambda m: None, answers=2))
    assert doc["answers"] == [{"task": "tiny"}] and doc["answer_outputs"] == []
    assert seen["space"] is None and seen["per_split"] == 2  # msa did not run
    keys, seconds = seen["rankings"]["fake good"]["q2"]  # last stage, per recall row
    assert keys == ["b"] and seconds >= 0
    assert seen["rankings"]["fake bad"]["q1"][0] == []
    plain = suite.run(suite.RunConfig(tasks=["tiny"], systems=["fake"], workdir=tmp_path,
                                      log=lambda m: None))
    assert "answers" not in plain


def test_kinds_table_has_one_row_per_kind_and_marks_partial_variants() -> None:
    from msa_agent.bench import report

    def row(system: str, kind: str, n: int) -> dict:
        return {"task": "t", "split": "test", "stage": "all", "system": system, "kind": kind,
                "n": n, "r1": 0.5, "r5": 1.0}

    doc = {"quality": [row("a", "all", 10), row("a", "two-hop", 4), row("a hops", "all", 4),
                       row("a hops", "two-hop", 4)]}
    lines = report.markdown_kinds(doc, "t").splitlines()[2:]
    assert [line.split(" | ")[1:3] for line in lines] == [["all", "10"], ["two-hop", "4"]]
    assert lines[0].endswith("| 0.50 / 1.00 | 0.50 / 1.00 (n=4) |")
