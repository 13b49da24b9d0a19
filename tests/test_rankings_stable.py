"""MSA routing rankings on a fixed space equal those recorded before the engine refactor.

``fixtures/rankings_before.json`` was written by the pre-refactor code (commit 39ec383) from
exactly this space and these queries: ids must match exactly and scores to float precision.
They were made under the paper's rule (max over query tokens), so the space is opened with
``route_top_tokens=1``; the default's own rule is checked in tests/runtime/test_routing.py.
Its multi-hop rows (every 3rd and 4th) are kept for the record but no longer compared: later
rounds now append the matched chunk instead of the whole memory (docs/recall.md).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest

from msa_agent import Memory
from msa_agent.bench.facts import fact_chains
from msa_testing import make_llama, make_tokenizer

BEFORE = Path(__file__).parent / "fixtures" / "rankings_before.json"


def _rankings(tmp: Path, combine: str) -> list[dict[str, Any]]:
    fs = fact_chains(12, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mem = Memory.open(tmp, (make_llama(seed=1), make_tokenizer()), routing="own_qk",
                          layer_combine=combine, chunk_size=8, route_top_tokens=1)
    with mem:
        for i, t in enumerate(fs.docs):
            mem.remember(t, namespace="a" if i % 3 else "b", metadata={"i": i})
        out = []
        for q in fs.questions[:10]:
            for ns in ("a", "b"):
                hits = mem.recall(q.text, k=5, namespace=ns, routing="msa")
                out.append({"ids": [h.metadata["i"] for h in hits],
                            "scores": [h.score for h in hits]})
    return out


@pytest.mark.parametrize("combine", ["heads", "mean"])
def test_rankings_identical_to_before_the_refactor(tmp_path: Path, combine: str) -> None:
    before = [r for i, r in enumerate(json.loads(BEFORE.read_text())[combine]) if i % 4 < 2]
    now = _rankings(tmp_path, combine)
    assert [r["ids"] for r in now] == [r["ids"] for r in before]
    for a, b in zip(now, before):
        assert a["scores"] == pytest.approx(b["scores"], rel=1e-5, abs=1e-6)
