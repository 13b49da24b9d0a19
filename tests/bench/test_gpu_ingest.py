"""The GPU ingest benchmark's core on CPU with a tiny random model and tiny batch sizes."""

from __future__ import annotations

import pytest
import torch

from msa_agent.bench import gpu_ingest as gi

CPU = torch.device("cpu")


def test_batches_fit_the_budget_in_one_forward(tokenizer) -> None:  # noqa: ANN001
    from msa_agent.model.encoder import length_batches

    texts, pool = gi.documents(tokenizer, 6, seed=1, vocab=300)
    assert len(texts) == len(pool) == 6 and all(0 < len(d) <= gi.MAX_DOC_TOKENS for d in pool)
    assert gi.documents(tokenizer, 6, seed=1, vocab=300)[1] == pool  # seeded
    budget = 3 * max(len(d) for d in pool) + 1
    batches = gi.batches_of(pool, budget, 4)
    assert [len(b) for b in batches] == [3] * 4
    assert batches[2][0] == pool[0]  # cycles through the pool
    for b in batches:
        assert len(list(length_batches([len(d) for d in b], budget))) == 1
    ids, mask = gi.padded(batches[0], CPU)
    assert ids.shape == mask.shape == (3, max(len(d) for d in batches[0]))
    assert mask.sum().item() == sum(len(d) for d in batches[0])
    assert ids[0, : len(batches[0][0])].tolist() == batches[0][0]


def test_rate_counts_real_tokens_over_timed_calls() -> None:
    r = gi.rate([0.5, 1.0, 2.0], [100, 100, 100])
    assert r["tokens_per_s"] == pytest.approx(300 / 3.5)
    assert r["median_tokens_per_s"] == pytest.approx(100.0) and r["n"] == 3
    calls: list[int] = []
    times = gi.timed(calls.append, [1, 2, 3, 4], warmup=2, device=CPU)
    assert calls == [1, 2, 3, 4] and len(times) == 2 and all(t >= 0 for t in times)


def test_run_dtype_on_cpu_fills_every_field(tiny_pair, tmp_path) -> None:  # noqa: ANN001
    opts = gi.Options(batch_tokens=(1024, 2048), batches=2, warmup=1, split_batches=1,
                      pool_docs=8, e2e_docs=3, vocab=300)
    res = gi.run_dtype(tiny_pair, CPU, "float32", opts, tmp_path)
    assert res["dtype"] == "float32" and res["model"]["weights"] == "random"
    rows = res["rows"]
    assert [r["batch_tokens"] for r in rows] == [1024, 2048]
    for r in rows:
        assert r["padded_per_batch"] <= r["batch_tokens"] and r["docs_per_batch"] >= 1
        assert 0 < r["tokens_per_batch"] <= r["padded_per_batch"]
        for part in ("encoder", "decoder", "lm"):
            assert r[part]["tokens_per_s"] > 0 and r[part]["n"] == 2
        assert r["encoder_over_decoder"] == pytest.approx(
            r["encoder"]["tokens_per_s"] / r["decoder"]["tokens_per_s"])
        assert r["encoder_split_ms"]["forward"] > 0 and r["encoder_split_ms"]["rest"] > 0
    assert rows[1]["docs_per_batch"] > rows[0]["docs_per_batch"]
    e2e = res["e2e"]
    assert e2e["batch_tokens"] == gi.best_size(rows) and e2e["texts"] == 3
    assert e2e["memories"] == 3 and e2e["tokens"] > 0 and e2e["tokens_per_s"] > 0
    table = gi.table([res])
    assert table.count("| float32 |") == 2 and "| 2,048 |" in table
    assert gi.e2e_lines([res])[0].startswith("float32 remember_many at ")


def test_table_marks_skipped_sizes_and_memory_errors() -> None:
    res = {"dtype": "bfloat16", "rows": [{"batch_tokens": 262144, "skipped": "time budget"}]}
    assert "| bfloat16 | 262,144 | skipped |" in gi.table([res])
    assert gi.tps({"error": "out of memory: CUDA"}).startswith("out of memory")
