"""The end-to-end recall benchmark's core on CPU at a tiny size, with a tiny random model, and
its stage accounting on hand-made calls; its synthetic fill and batched pass likewise."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from msa_agent.bench import gpu_recall as gr
from msa_agent.bench import synthetic_fill as sf
from msa_agent.store import ArraySpec

CPU = torch.device("cpu")


def test_probe_times_are_exclusive() -> None:
    probe = gr.Probe(CPU)
    inner = probe.wrap("inner", lambda: time.sleep(0.02))

    def outer() -> None:
        time.sleep(0.01)
        inner()

    probe.wrap("outer", outer)()
    got = probe.take()
    assert 15 <= got["inner"] < 60 and 5 <= got["outer"] < 18
    assert probe.take() == {}


def test_patched_restores_instance_and_module_attributes() -> None:
    class Thing:
        def f(self) -> int:
            return 1

    t, probe = Thing(), gr.Probe(CPU)
    with gr.patched([(t, "f", "f"), (gr, "latency", "lat")], probe):
        assert t.f() == 1 and "f" in vars(t) and hasattr(gr.latency, "__wrapped__")
    assert "f" not in vars(t) and not hasattr(gr.latency, "__wrapped__")
    assert set(probe.take()) == {"f"}


def test_text_is_seeded_and_queries_skip_frequent_words() -> None:
    a, b = gr.TextGen(vocab_size=500, seed=3), gr.TextGen(vocab_size=500, seed=3)
    rows = a.draw(4, 50)
    assert np.array_equal(rows, b.draw(4, 50)) and a.text(rows[0]) == b.text(rows[0])
    q = a.query(rows[0], np.random.default_rng(0)).rstrip("?").split()
    top = set(a.vocab[: gr.STOP_LIKE])
    assert 1 <= len(q) <= gr.QUERY_WORDS and not top & set(q)


def test_run_on_cpu_writes_every_stage(tiny_pair, tmp_path: Path) -> None:  # noqa: ANN001
    opts = gr.Options(sizes=[1500, 3000], k=4, queries=3, warmup=1, batch_docs=3, repeats=2,
                      batches=[2], batch_queries=2)
    data = gr.run(tiny_pair, CPU, opts, tmp_path / "out", tmp_path / "work", commit="test")
    saved = json.loads((tmp_path / "out" / "gpu-recall.json").read_text())
    assert saved["env"]["commit"] == "test" and saved["model"]["weights"] == "random"
    rows = data["rows"]
    assert [r["tokens_target"] for r in rows] == [1500, 3000]
    assert rows[0]["tokens"] >= 1500 and rows[1]["tokens"] >= 3000
    assert rows[1]["docs"] > rows[0]["docs"] > 0
    for r in rows:
        assert r["ingest"]["tokens_per_s"] > 0 and r["ingest"]["stage_seconds"]["encode"] > 0
        assert r["kernel_alone"]["p50_ms"] > 0 and r["rank_alone"]["p50_ms"] > 0
        for mode in gr.MODES:
            m = r[mode]
            assert m["plain"]["p50_ms"] > 0 and m["plain"]["n"] == 6
            assert len(m["plain_passes"]) == 2 and len(m["plain_ms_first_pass"]) == 3
            assert {"tokenize", "backbone", "router_q", "rank", "other"} <= set(m["stages"])
            assert set(m["groups"]) == set(gr.GROUPS)
            assert m["groups"]["forward"]["p50_ms"] > 0 and m["groups"]["routing"]["p50_ms"] > 0
            assert m["groups"]["fetch"]["p50_ms"] > 0
        assert r["hybrid"]["groups"]["lexical"]["p50_ms"] > 0
        assert r["msa"]["groups"]["lexical"]["p50_ms"] == 0
        assert r["fill"] == "encode" and r["complete"]
        assert {m: list(b) for m, b in r["batches"].items()} == {"msa": ["2"], "hybrid": ["2"]}
    table = gr.table(rows, gr.MODES)
    assert table.count("| msa |") == 2 and table.count("| hybrid |") == 2
    assert gr.ingest_table(rows).count("\n") == 3


def test_budget_skips_a_size_that_would_not_fit() -> None:
    row = {"ingest": {"tokens_per_s": 1000.0, "seconds": 1.0}, "wall_s": 2.0}
    corpus = gr.Corpus(tokens=1000)
    now = time.perf_counter()
    assert gr.fits(row, corpus, 5000, now, 60)  # 4 s ingest + 1 s queries
    assert not gr.fits(row, corpus, 100_000, now, 60)  # 99 s
    assert gr.fits(row, corpus, 100_000, now, 0)  # no budget


def test_synthetic_fill_then_open_recall_and_batches_on_cpu(tiny_pair, tmp_path: Path  # noqa: ANN001
                                                            ) -> None:
    opts = gr.Options(sizes=[1500, 4000], k=4, queries=3, warmup=1, batch_docs=3,
                      fill="synthetic", key_dtype="bfloat16", batches=[1, 3], batch_queries=3)
    data = gr.run(tiny_pair, CPU, opts, tmp_path / "out", tmp_path / "work", commit="test")
    saved = json.loads((tmp_path / "out" / "gpu-recall.json").read_text())
    assert saved["fill"] == "synthetic" and saved["keys"] == "random"
    text = data["text"]
    per_doc = sf.estimate_tokens(text["words_per_doc"], text["tokens_per_word"])
    chunks = math.ceil(per_doc / 64)  # the default chunk size
    rows = data["rows"]
    assert [r["tokens_target"] for r in rows] == [1500, 4000] and all(r["complete"] for r in rows)
    for r in rows:
        fill, disk = r["ingest"], r["ingest"]["disk"]
        assert r["fill"] == "synthetic" and fill["pooled"] == "random"
        assert r["tokens"] >= r["tokens_target"] and disk["tokens"] == r["tokens"]
        assert disk["memories"] == r["memories"] == r["docs"]  # stored = indexed on open
        assert disk["chunks"] == r["chunks"] == r["memories"] * chunks
        assert fill["tokens_per_s"] > 0 and fill["open_seconds"] > 0
        assert min(disk["array_bytes"].values()) > 0 and disk["sqlite_bytes"] > 0
        assert r["resident_key_dtype"] == "bfloat16"
        assert r["hybrid"]["source_in_top_k"] == 1.0  # the lexical channel finds the source
        assert r["kernel_alone"]["p50_ms"] > 0
        for mode in gr.MODES:
            for size, b in r["batches"][mode].items():
                rounds = gr.batch_rounds(int(size), 3)
                assert b["batches"] == rounds == len(b["batch_ms"]) and b["hits_min"] == 4
                assert b["queries"] == rounds * int(size) and b["queries_per_s"] > 0
                assert b["per_query"]["p50_ms"] <= b["batch"]["p50_ms"]
        assert all(b["source_in_top_k"] == 1.0 for b in r["batches"]["hybrid"].values())
    assert rows[1]["memories"] > rows[0]["memories"]
    assert sf.table(rows).count("\n") == 3
    assert gr.batch_table(rows, gr.MODES).count("| hybrid | 3 |") == 2
    mem = gr.open_memory(tiny_pair, CPU, tmp_path / "work", 0, key_dtype="bfloat16")
    try:  # the space opens as a user's would and recalls k hits
        assert len(mem.recall(rows[-1]["query_example"], k=4, routing="msa")) == 4
        assert mem.stats().memories == rows[-1]["memories"]
    finally:
        mem.close()


def test_batch_arrays_have_each_memorys_rows_and_zeros_when_asked() -> None:
    specs = {n: ArraySpec(n, "chunk", (2, 1, 4)) for n in ("route_k", "pooled_k")}
    specs["full_k"] = ArraySpec("full_k", "token", (2, 1, 4))
    memories = sf.new_memories(sf.Docs(["a b", "c d e"], [5, 130]), 64, "ns")
    assert [m.n_chunks for m in memories] == [1, 3]
    assert all(m.id == m.source_id and m.namespace == "ns" for m in memories)
    rows = sf.batch_arrays(specs, memories, sf.RandomRows("cpu", 0), "zeros")
    assert [r["route_k"].shape for r in rows] == [(1, 2, 1, 4), (3, 2, 1, 4)]
    assert [len(r["full_k"]) for r in rows] == [5, 130]
    assert all(r["route_k"].dtype == np.float16 and r["route_k"].any() for r in rows)
    assert not any(r["pooled_k"].any() or r["full_k"].any() for r in rows)


def test_batch_sizes_reach_the_target_and_prefetch_errors_surface() -> None:
    sizes = list(sf.batch_sizes(1000, 10_000, 480, 4))
    assert max(sizes) == 4 and 1000 + sum(sizes) * 480 >= 10_000 > 1000 + (sum(sizes) - 1) * 480

    def broken(n: int) -> sf.Docs:
        raise RuntimeError("no text")

    layout = ({"route_k": ArraySpec("route_k", "chunk", (1, 1, 2))}, 64)
    with pytest.raises(RuntimeError, match="no text"):
        list(sf.batches(broken, iter([1, 1]), layout, sf.FillOptions(prefetch=True)))
