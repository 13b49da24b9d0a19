"""Fixtures of the LangChain/LangGraph tests: one tiny-model memory per module.

Test modules import them; a ``conftest.py`` here would shadow the root one that
``tests_helpers`` imports.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from msa_agent.memory import Memory

FACTS = [
    "Paris is the capital of France.",
    "Bob likes green tea in the morning.",
    "The quick brown fox jumps over the lazy dog.",
    "Alice works for Acme, which is based in Lisbon.",
    "Memory sparse attention routes a query to a few documents.",
]


@pytest.fixture(scope="module")
def memory(tmp_path_factory: pytest.TempPathFactory, tiny_llama, tokenizer) -> Iterator[Memory]:  # noqa: ANN001
    """A memory space on the tiny random model, holding FACTS."""
    path: Path = tmp_path_factory.mktemp("lc") / "space"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny model has no trained router
        mem = Memory.open(path, model=(tiny_llama, tokenizer))
    with mem:
        mem.remember_many(FACTS)
        yield mem

