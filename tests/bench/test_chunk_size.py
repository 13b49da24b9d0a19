"""The chunk-size bench: finer chunks give more routing keys, and rows come from the metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from msa_agent.bench.chunk_size import run


@pytest.mark.filterwarnings("ignore:no trained router")
def test_finer_chunks_store_more_keys(tmp_path: Path, tiny_llama, tokenizer) -> None:  # noqa: ANN001
    coarse = run("facts", "quick", 64, None, tmp_path, (tiny_llama, tokenizer))
    fine = run("facts", "quick", 4, None, tmp_path, (tiny_llama, tokenizer))
    assert coarse["stats"]["memories"] == fine["stats"]["memories"] == 200
    assert fine["stats"]["chunks"] > 2 * coarse["stats"]["chunks"]
    kinds = {(r["split"], r["kind"]) for r in fine["rows"]}
    assert kinds == {("val", "all"), ("val", "single-hop"), ("val", "two-hop")}
    assert all(0.0 <= r["r5"] <= 1.0 and r["n"] > 0 for r in fine["rows"])
