"""Each script of ``examples/`` runs on the real embedded model, exits 0 and shows what it says.

Marked ``slow`` (each loads SmolLM2-135M in a fresh process, 15-60 s on a 2-core CPU).
Run: ``pytest tests/test_examples.py -m slow``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TIMEOUT_S = 300

pytestmark = pytest.mark.slow


def run_example(name: str, folder: Path) -> str:
    """Run ``examples/<name>`` with ``folder`` as its working folder; its stdout."""
    script = EXAMPLES / name
    cmd = ["bash", str(script)] if name.endswith(".sh") else [sys.executable, str(script)]
    env = {**os.environ,  # the `msa` of this interpreter first on PATH, for the shell script
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run([*cmd, str(folder)], cwd=folder.parent, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, f"{name} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done.stdout


def section(out: str, title: str) -> list[str]:
    """The numbered lines (``  1. ...``) of the block that starts with the line ``title``."""
    lines = out.splitlines()
    block = lines[lines.index(title) + 1:]
    block = block[:block.index("")] if "" in block else block
    return [line for line in block if re.match(r"\s+\d+\. ", line)]


def test_agent_loop(tmp_path: Path) -> None:
    out = run_example("agent_loop.py", tmp_path / "memory")
    assert "remembered 5 turns of 2 conversations" in out
    ranked = section(out, "recall: When are Maya's violin lessons?")
    assert len(ranked) == 3
    assert "[s-family] User: my daughter Maya starts violin lessons" in ranked[0]
    assert "matched chunk: 'User: my daughter Maya" in out
    assert re.search(r"^answer: \S", out, re.M)
    assert re.search(r"^streamed answer to .*: \S", out, re.M)
    assert "forgot 2 memories of session s-work; sessions left: ['s-family']" in out


def test_langchain_retriever(tmp_path: Path) -> None:
    out = run_example("langchain_retriever.py", tmp_path / "memory")
    first_doc = next(line for line in out.splitlines() if line.startswith("document "))
    assert first_doc.endswith("Ada is Dana's grey cat; she is twelve and eats only "
                              "fish-based food.")
    context = out.split("Context:\n", 1)[1].splitlines()
    assert context[0].endswith("Ada is Dana's grey cat; she is twelve and eats only "
                               "fish-based food.") and context[0].startswith("- (")
    assert "Human: What does Dana's cat eat?" in out
    assert re.search(r"^answer \(Memory.answer as the LLM\): \S", out, re.M)


def test_langgraph_store_agent(tmp_path: Path) -> None:
    out = run_example("langgraph_store_agent.py", tmp_path / "memory")
    assert "[session: 0 facts about dana" in out and "I will remember that" in out
    later = out.split("[session: 3 facts about dana in the store]", 1)[1]
    where, food = later.split("user : What food should I avoid?")
    assert where.split("  - ")[1].startswith("I live in Lisbon with my grey cat Ada.")
    assert food.split("  - ")[1].startswith("I am allergic to peanuts")


def test_cli_session(tmp_path: Path) -> None:
    out = run_example("cli_session.sh", tmp_path / "work")
    assert "memory space ready at" in out
    assert "ingested 3 source(s), skipped 0" in out
    recall = out.split("$ msa recall", 1)[1].split("$ msa ask", 1)[0]
    sources = re.findall(r"deploy\.txt|cat\.md|porto\.md", recall)  # table rows, best first
    assert sources[0] == "deploy.txt" and len(sources) == 2
    assert "generated" in out.split("$ msa ask", 1)[1]
    assert "forgot 1 memory" in out
    assert re.search(r"memories\s+2\s", out.split("$ msa stats", 1)[1])


def test_import_chat_history(tmp_path: Path) -> None:
    out = run_example("import_chat_history.py", tmp_path / "memory")
    assert "imported 6 messages from chat_export.json, 2023-03-02 to 2025-05-14" in out
    newest_first = section(out, "recall: Where do I live?")
    assert "2025-05-14" in newest_first[0] and "I moved to Lisbon" in newest_first[0]
    assert "2023-03-02" in newest_first[1] and "I live in Porto" in newest_first[1]
    until = section(out, "recall: Where do I live? (until 2024)")
    assert "I live in Porto" in until[0] and all("2023-" in line for line in until)
    since = section(out, "recall: Where do I live? (since 2025)")
    assert "I moved to Lisbon" in since[0] and all("2025-" in line for line in since)


def test_async_agent(tmp_path: Path) -> None:
    out = run_example("async_agent.py", tmp_path / "memory")
    assert "remembered 3 facts" in out
    assert "recall: Which host do staging deploys go to? -> The staging deploy host is " \
           "vrai-thorn-7." in out
    assert "recall: What is the cat called? -> Dana's grey cat is called Ada." in out
    assert "recall: When is the weekly sync? -> The weekly sync is on Mondays" in out
    assert re.search(r"^streamed answer to .*: \S", out, re.M)
    assert "forgot 1 memory; 2 left" in out
