"""``examples/langgraph_agent.py`` on the embedded model: the second run recalls the first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "langgraph_agent.py"


@pytest.mark.slow
def test_agent_remembers_across_runs(tmp_path: Path) -> None:
    def run() -> str:
        cmd = [sys.executable, str(EXAMPLE), "--path", str(tmp_path / "mem")]
        done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                              check=True)
        return done.stdout

    first = run()
    assert "[0 facts about dana" in first and "I will remember that" in first
    second = run()
    assert "[3 facts about dana" in second
    assert "I live in Lisbon with my grey cat Ada." in second
