"""The answer stage on a tiny random model: one prompt frame, fitting, skips, rows, reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from msa_agent import Memory
from msa_agent.bench import answer_report, answer_stage, answers, report
from msa_agent.bench.tasks.base import MemoryItem, Query, Stage, Task, memory_time
from msa_agent.model.loader import wrap_model
from msa_agent.runtime.answer import SYSTEM

pytestmark = pytest.mark.filterwarnings("ignore::msa_agent.runtime.engine.RoutingQualityWarning")

MEMS = (
    MemoryItem("a", "Alice works for Acme.", "u1", 0),
    MemoryItem("b", "Acme is based in Lisbon.", "u1", 1),
    MemoryItem("c", "Bob likes green tea.", "u2", 2),
)
QS = (
    Query("q1", "Where does Alice work?", ("a",), "single", "val", "u1", answer="Acme"),
    Query(
        "q2", "Where is Alice's office?", ("a", "b"), "two", "test", "u1", hops=2, answer="Lisbon"
    ),
    Query("q3", "What does Bob like?", ("c",), "single", "test", "u2", answer="green tea"),
    Query("q4", "No gold answer here", ("c",), "single", "test", "u2"),
)
WHEN = [memory_time(m) for m in MEMS]  # the dates every row's memories are shown with


def tiny_task() -> Task:
    return Task("tiny", "tiny", (Stage("all", MEMS, QS),))


class Recording(answers.Reader):
    """A reader that records its prompts and answers 'Acme'; ``limit`` caps its budget."""

    def __init__(self, lm: Any, limit: int | None = None) -> None:
        super().__init__(lm, max_new_tokens=4)
        self.limit, self.prompts, self.shown = limit, [], []

    @property
    def budget(self) -> int:
        return self.limit if self.limit is not None else super().budget

    def generate(self, prompt: Any, shown: Any = (), question: str = "") -> str:
        self.prompts.append(list(prompt))
        self.shown.append(list(shown))
        return "It is Acme."


@pytest.fixture()
def lm(tiny_pair):  # noqa: ANN001, ANN201
    return wrap_model(*tiny_pair)


def rankings() -> answer_stage.Rankings:
    top = {"q1": (["a", "b"], 0.5), "q2": (["b", "a"], 0.25), "q3": (["c"], 0.0)}
    return {"BM25": top, "MiniLM windows": top}


def test_pick_takes_kinds_in_turn_and_needs_an_answer() -> None:
    picked = answers.pick(QS, 2)
    assert [q.qid for q in picked] == ["q1", "q2", "q3"]  # val: q1; test: two, then single
    assert [q.qid for q in answers.pick(QS, 1)] == ["q1", "q2"]


def test_every_baseline_row_uses_the_same_frame(lm: Any) -> None:
    reader = Recording(lm)
    rows, outs = answer_stage.run_stage(tiny_task(), rankings(), reader, None, 6, lambda m: None)
    by = {(o["system"], o["qid"]): o for o in outs}
    assert {o["system"] for o in outs} == {
        "RAG BM25",
        "RAG MiniLM windows",
        "full context",
        "no memory",
    }
    # same ranking -> byte-identical prompts for both RAG rows; the frame is prompt_ids
    n = 3
    bm25, windows, full, none = (reader.prompts[i * n : (i + 1) * n] for i in range(4))
    assert bm25 == windows
    both = [MEMS[0].text, MEMS[1].text]
    assert bm25[0] == reader.prompt(QS[0].text, both, WHEN[:2])
    # the answer format (snap, extractive) works from the texts each row was shown
    assert reader.shown[0] == both and reader.shown[2 * n] == both and reader.shown[3 * n] == []
    assert bm25[1] == reader.prompt(QS[1].text, both[::-1], WHEN[1::-1])  # its own rank order
    assert full[0] == reader.prompt(QS[0].text, both, WHEN[:2])  # oldest first
    assert full[2] == reader.prompt(QS[2].text, [MEMS[2].text], WHEN[2:])  # its namespace only
    assert f"({WHEN[0]:%Y-%m-%d}) Alice works for Acme." in lm.tokenizer.decode(bm25[0])
    assert none[0] == reader.prompt(QS[0].text, [])
    tok = lm.tokenizer
    assert all(tok.decode(p).startswith(SYSTEM) for p in reader.prompts)
    # graded against the gold string, latency counts the recall stage's search time
    assert by["RAG BM25", "q1"]["correct"] and not by["RAG BM25", "q2"]["correct"]
    assert by["RAG BM25", "q1"]["ms"] >= 500 and by["no memory", "q1"]["ms"] < 500
    assert by["RAG BM25", "q2"]["gold_in_context"] and not by["no memory", "q1"]["gold_in_context"]
    test_all = next(
        r for r in rows if (r["system"], r["split"], r["kind"]) == ("RAG BM25", "test", "all")
    )
    assert test_all["n"] == 2 and test_all["accuracy"] == 0.0
    assert test_all["f1"] == pytest.approx(0.0)


def test_full_context_is_skipped_and_counted_when_it_does_not_fit(lm: Any) -> None:
    reader = Recording(lm)
    reader.limit = len(reader.prompt(QS[2].text, [MEMS[2].text], WHEN[2:]))  # u2 fits, u1 not
    rows, outs = answer_stage.run_stage(tiny_task(), {}, reader, None, 6, lambda m: None)
    full = {o["qid"]: o for o in outs if o["system"] == "full context"}
    assert full["q1"]["skipped"].startswith("does not fit") and full["q2"]["skipped"]
    assert full["q3"]["skipped"] is False and full["q3"]["correct"] is False
    row = {(r["system"], r["split"], r["kind"]): r for r in rows}
    assert row["full context", "test", "all"]["skipped"] == 1
    assert row["full context", "test", "all"]["answered"] == 1
    assert row["full context", "val", "all"]["accuracy"] is None  # nothing answered
    assert row["no memory", "val", "all"]["skipped"] == 0


def test_fit_cuts_to_the_budget_in_rank_order(lm: Any) -> None:
    reader = Recording(lm)
    long = "Alice works for Acme. " * 40
    whole = reader.prompt("q?", ["first memory", long])
    reader.limit = len(whole) - 20
    prompt, used, cut = answers.fit(reader, "q?", ["first memory", long, "third"])
    assert cut and used == 2 and len(prompt) <= reader.limit
    assert lm.tokenizer.decode(prompt).count("first memory") == 1
    reader.limit = None
    assert answers.fit(reader, "q?", ["a", "b"]) == (reader.prompt("q?", ["a", "b"]), 2, False)


def test_msa_rows_use_memory_answer_in_the_same_frame(lm: Any, tmp_path: Path) -> None:
    space = tmp_path / "space"
    with Memory.open(space, model=lm, chunk_size=8) as mem:
        mem.remember_many(
            [{"text": m.text, "namespace": m.namespace, "metadata": {"key": m.key}} for m in MEMS]
        )
    reader = answers.Reader(lm, max_new_tokens=3)
    # whole texts: the RAG rows' own reading (the default reads chunks of them)
    outs = answer_stage.msa_outputs(reader, QS[:1], space, {"read": "text"})
    with Memory.open(space, model=lm) as mem:
        ans = mem.answer(QS[0].text, k=5, namespace="u1", max_new_tokens=3, read="text")
    hits = [h for r in ans.rounds for h in r.memories]
    texts, times = [h.text for h in hits], [h.created_at for h in hits]
    assert outs[0]["prompt_tokens"] == len(reader.prompt(QS[0].text, texts, times))
    assert outs[0]["answer"] == ans.text and outs[0]["gold_in_context"]
    # same frame, same answer format over the same texts
    assert reader.generate(reader.prompt(QS[0].text, texts, times), texts, QS[0].text) == \
        ans.text
    rows, _ = answer_stage.run_stage(tiny_task(), {}, reader, space, 6, lambda m: None)
    systems = {r["system"] for r in rows}
    assert {"msa-agent answer", "msa-agent answer hops=auto"} <= systems
    auto = [r for r in rows if r["system"] == "msa-agent answer hops=auto" and r["kind"] == "all"]
    assert [r["n"] for r in auto] == [1]  # multi-hop questions only


def test_reports_print_the_answer_table(lm: Any) -> None:
    doc: dict[str, Any] = {
        "mode": "quick",
        "answers": [],
        "answer_outputs": [],
        "command": "msa bench",
        "started": "now",
        "machine": {},
        "tasks": {},
        "quality": [],
        "costs": [],
    }
    rows, outs = answer_stage.run_stage(
        tiny_task(), rankings(), Recording(lm), None, 6, lambda m: None
    )
    doc["answers"], doc["answer_settings"] = rows, Recording(lm).settings()
    md = answer_report.markdown(doc)
    assert "| tiny | RAG BM25 |" in md and "full context" in md
    assert "test acc" in md.splitlines()[0]
    assert "**tiny answers, test**" in report.markdown_all(doc)
    assert answer_report.rich_table(doc).row_count == 4


@pytest.mark.slow
def test_default_reader_is_the_embedded_model_with_its_window() -> None:
    reader = answers.default_reader()
    assert reader.window == 8192 and reader.budget == 8192 - answers.MAX_NEW_TOKENS
    text = reader.generate(reader.prompt("Where is Acme based?", ["Acme is based in Lisbon."]))
    assert "Lisbon" in text


def test_suite_answers_on_the_recall_stage_space(
    lm: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end on the tiny model: the msa system's space is found and answered from."""
    from msa_agent.bench import suite

    real_open = Memory.open

    def tiny_open(path: Path, model: Any = None, **kw: Any) -> Memory:
        return real_open(path, model=model or lm, **{"chunk_size": 8, **kw})

    monkeypatch.setattr(Memory, "open", tiny_open)
    monkeypatch.setattr(answers, "default_reader", lambda: Recording(lm))
    monkeypatch.setattr(suite, "build_task", lambda name, mode, **kw: tiny_task())
    monkeypatch.setattr(suite, "count_tokens", lambda texts: sum(len(t.split()) for t in texts))
    cfg = suite.RunConfig(tasks=["tiny"], systems=["msa"], workdir=tmp_path, log=lambda m: None)
    cfg.answers = 6
    doc = suite.run(cfg)
    systems = {r["system"] for r in doc["answers"]}
    assert {"msa-agent answer", "full context", "no memory"} <= systems
    msa = [o for o in doc["answer_outputs"] if o["system"] == "msa-agent answer"]
    assert len(msa) == 3 and all(o["gold_in_context"] for o in msa)  # read its memories
    assert doc["answer_settings"]["k"] == 5 and doc["answer_settings"]["questions_per_split"] == 6


def test_a_missing_space_skips_the_msa_rows(lm: Any, tmp_path: Path) -> None:
    logs: list[str] = []
    rows, _ = answer_stage.run_stage(
        tiny_task(), {}, Recording(lm), tmp_path / "none", 6, logs.append
    )
    assert not any(r["system"].startswith("msa-agent") for r in rows)
    assert "no msa-agent space" in logs[0] and not (tmp_path / "none").exists()
