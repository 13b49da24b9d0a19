"""The summary probes' shared step (``swapped_rows``): the vectors it is given are the ones
the runtime's fusion reads, in the open space only."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from msa_agent import Memory
from msa_agent.bench.summary_channel import swapped_rows
from msa_agent.bench.tasks.base import Query
from msa_testing import make_llama, make_tokenizer

pytestmark = pytest.mark.filterwarnings("ignore::msa_agent.errors.RoutingQualityWarning")
TEXTS = [f"note {i}: the {w} is kept at {p}" for i, (w, p) in enumerate(
    [("violin", "Brakel"), ("garage", "Lisbon"), ("tea", "Oslo"), ("lamp", "Tuesday")])]


def top1(rows: dict, label: str) -> float:
    return next(r["r1"] for r in rows[f"{label} | msa z w=50.0"] if r["kind"] == "all")


def test_swapped_vectors_decide_and_stay_off_disk(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mem = Memory.open(tmp_path / "s", (make_llama(), make_tokenizer()), summary_layer=-1)
    with mem:
        for i, t in enumerate(TEXTS):
            mem.remember(t, key=f"k{i}", metadata={"key": f"k{i}"})
        eng = mem._engine
        stored = eng.index._summary.view().clone()  # [4, hidden], the index's order
        keys = [eng.get(i).metadata["key"] for i in eng.index.doc_ids]
        queries = [Query(f"q{j}", f"where is thing {j}?", (keys[j],), "fact", "val", "default")
                   for j in range(len(keys))]
        routes = [eng.query(q.text) for q in queries]
        # each question asks with its gold memory's vector: the summary channel puts it first
        rows = swapped_rows(mem, queries, routes, stored, stored, (50.0,), "own")
        assert top1(rows, "own") == 1.0
        # vectors of other lengths rank as their directions do (cosines, not dot products)
        scaled = stored * torch.tensor([[9.0], [0.5], [3.0], [0.1]])
        assert swapped_rows(mem, queries, routes, scaled, stored, (50.0,), "own") == rows
        # the same questions with the next memory's vector: none is first any more
        rows = swapped_rows(mem, queries, routes, stored, stored.roll(1, 0), (50.0,), "next")
        assert top1(rows, "next") == 0.0
    with Memory.open(tmp_path / "s", (make_llama(), make_tokenizer())) as again:
        assert torch.equal(again._engine.index._summary.view(), stored)  # disk untouched
