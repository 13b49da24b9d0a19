"""The end-to-end recall benchmark's core on CPU at a tiny size, with a tiny random model, and
its stage accounting on hand-made calls."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from msa_agent.bench import gpu_recall as gr

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
    opts = gr.Options(sizes=[1500, 3000], k=4, queries=3, warmup=1, batch_docs=3, repeats=2)
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
    table = gr.table(rows, gr.MODES)
    assert table.count("| msa |") == 2 and table.count("| hybrid |") == 2


def test_budget_skips_a_size_that_would_not_fit() -> None:
    row = {"ingest": {"tokens_per_s": 1000.0, "seconds": 1.0}, "wall_s": 2.0}
    corpus = gr.Corpus(tokens=1000)
    now = time.perf_counter()
    assert gr.fits(row, corpus, 5000, now, 60)  # 4 s ingest + 1 s queries
    assert not gr.fits(row, corpus, 100_000, now, 60)  # 99 s
    assert gr.fits(row, corpus, 100_000, now, 0)  # no budget
