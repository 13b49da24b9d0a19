"""The msa-agent adapter on the real default model (slow: loads SmolLM2-135M)."""

from __future__ import annotations

from pathlib import Path

import pytest

from msa_agent.bench.systems import MsaAgent
from msa_agent.bench.tasks.base import MemoryItem, Query


@pytest.mark.slow
def test_msa_adapter_keys_namespaces_and_parts(tmp_path: Path) -> None:
    long_text = "\n".join(f"User: line {i} about gardening and tomatoes." for i in range(200))
    agent = MsaAgent(tmp_path, {"default": {}}, batch=2)
    try:
        agent.add([MemoryItem("a", "User: my dentist is Dr. Vrask Thornel.", "u1"),
                   MemoryItem("b", long_text, "u1"),  # > 512 tokens: stored in parts
                   MemoryItem("c", "User: my dentist is Dr. Kelvin Brask.", "u2")])
        got = agent.search(Query("q", "Who is my dentist?", ("a",), "k", "test", "u1"), 5, {})
        assert sorted(got) == ["a", "b"]  # distinct keys, namespace u1 only
        assert agent.tokens() > 500 and agent.index_bytes() > 0
    finally:
        agent.close()
