"""The time-to-first-token benchmark's core on a tiny random model: every mode, sane numbers."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from msa_agent import Memory
from msa_agent.bench import ttft
from msa_agent.runtime.kv_frame import tail_ids

pytestmark = pytest.mark.filterwarnings("ignore::msa_agent.runtime.engine.RoutingQualityWarning")

SENTENCES = ["Alice works for Acme in Lisbon.", "Acme builds small boats for fishermen.",
             "Bob likes green tea in the morning.", "The harbour opens at six every day.",
             "Carol paints the boats blue and white.", "The market sells fish until noon."] * 2


def test_memory_texts_reach_the_token_target(tokenizer) -> None:  # noqa: ANN001
    texts = ttft.memory_texts(tokenizer, 3, 20, SENTENCES)
    assert len(texts) == 3 and all(n >= 20 for n in ttft.token_counts(tokenizer, texts))
    with pytest.raises(ValueError, match="ran out"):
        ttft.memory_texts(tokenizer, 50, 20, SENTENCES)


def test_measure_times_every_mode_against_no_memory(tmp_path: Path, tiny_pair) -> None:
    texts = ttft.memory_texts(tiny_pair[1], 3, 24, SENTENCES)
    settings = ttft.Settings(memories=3, tokens=24, repeats=1, question="Where does Alice work?")
    with Memory.open(tmp_path / "m", model=tiny_pair, chunk_size=8,
                     **ttft.open_options(24)) as mem:
        ttft.fill(mem, texts)
        rows = ttft.summarise(ttft.measure(mem, settings))
    assert list(rows) == list(ttft.MODES)
    none, text = rows["none"], rows["text"]
    assert none["memory_tokens"] == 0 and text["memory_tokens"] >= 3 * 24
    assert rows["full"]["memory_tokens"] == text["memory_tokens"]
    assert 0 < rows["pooled"]["memory_tokens"] < text["memory_tokens"]  # chunks, not tokens
    # a chunk window per memory: at most 3 chunks of 8 rows each, fewer than a whole memory
    assert 0 < rows["kv_chunks"]["memory_tokens"] <= 3 * 3 * 8
    assert rows["kv_chunks"]["memory_tokens"] < rows["full"]["memory_tokens"]
    # chunks: the same windows as text, re-prefilled (dated notes, so a longer prompt)
    assert 0 < rows["chunks"]["memory_tokens"] < text["memory_tokens"]
    assert rows["chunks"]["prompt_tokens"] > none["prompt_tokens"]
    assert text["prompt_tokens"] > none["prompt_tokens"] == rows["pooled"]["prompt_tokens"]
    # a chat-framed full read (the default) prompts with the frame's tail only: its head is
    # read as memory K/V before the memories
    tail = tail_ids(tiny_pair[1], settings.question)
    assert rows["full"]["prompt_tokens"] == len(tail) < none["prompt_tokens"]
    assert rows["kv_chunks"]["prompt_tokens"] == len(tail)
    for mode, row in rows.items():
        assert len(row["samples"]) == 1 and row["ttft_ms"]["p50"] > 0
        assert row["ttft_ms"]["min"] <= row["ttft_ms"]["p50"]
        assert row["route_ms"]["p50"] > 0 and row["after_route_ms"]["p50"] > 0
        want = row["ttft_ms"]["p50"] / none["ttft_ms"]["p50"]
        assert row["ratio_to_none"]["ttft_p50"] == pytest.approx(want), mode
    assert none["ratio_to_none"]["ttft_p50"] == 1.0
    check = ttft.target_check(rows)
    assert set(check) == {"rule", "pooled", "full", "kv_chunks"}
    assert "| none |" in ttft.table(rows) and "| full |" in ttft.table(rows)


def test_k_reads_fewer_memories_than_the_space_holds(tmp_path: Path, tiny_pair) -> None:
    texts = ttft.memory_texts(tiny_pair[1], 3, 24, SENTENCES)
    settings = ttft.Settings(memories=3, tokens=24, repeats=1, modes=("none", "full"), k=1,
                             question="Where does Alice work?")
    assert settings.read_k == 1 and ttft.Settings(memories=3).read_k == 3
    with Memory.open(tmp_path / "m", model=tiny_pair, chunk_size=8,
                     **ttft.open_options(24)) as mem:
        ttft.fill(mem, texts)
        rows = ttft.summarise(ttft.measure(mem, settings))
    # one whole memory read, not three
    assert 0 < rows["full"]["memory_tokens"] <= max(ttft.token_counts(tiny_pair[1], texts))


def test_paired_ratio_compares_each_round_with_its_own_no_memory_time() -> None:
    def samples(ms: list[float]) -> list[ttft.Sample]:
        return [ttft.Sample(ttft_ms=t, route_ms=1.0, read_ms=0.0, prompt_tokens=1,
                            memory_tokens=0, generated_tokens=1) for t in ms]
    # rounds' ratios 1.2, 1.05, 1.5 -> 1.2; the p50s' ratio (84 / 60 = 1.4) pairs no round
    none, full = samples([40, 80, 60]), samples([48, 84, 90])
    assert ttft.paired_ratio(full, none) == pytest.approx(1.2)
    assert ttft.paired_ratio(none, none) == 1.0


def test_modes_option_picks_modes_and_profile_names_the_answer(tmp_path: Path,
                                                             tiny_pair) -> None:
    assert ttft._modes("none, full") == ("none", "full")
    with pytest.raises(SystemExit, match="--modes"):
        ttft._modes("none,fast")
    texts = ttft.memory_texts(tiny_pair[1], 2, 24, SENTENCES)
    settings = ttft.Settings(memories=2, tokens=24, repeats=1, modes=("none", "full"),
                             question="Where does Alice work?")
    with Memory.open(tmp_path / "m", model=tiny_pair, chunk_size=8,
                     **ttft.open_options(24)) as mem:
        ttft.fill(mem, texts)
        assert list(ttft.summarise(ttft.measure(mem, settings))) == ["none", "full"]
        report = ttft.profile(mem, "full", settings)
    assert "cumulative" in report and "answer" in report


def test_save_writes_json_only_when_asked_and_machine_name_falls_back_to_cores(
        tmp_path: Path) -> None:
    out = tmp_path / "deep" / "r.json"
    ttft.save({"a": 1}, out)
    ttft.save({"a": 2}, None)
    assert out.read_text() == '{\n "a": 1\n}\n'
    assert ttft.machine_name({"machine": "NVIDIA H200", "cpus": 16}) == "NVIDIA H200"
    assert ttft.machine_name({"cpus": 2}) == "2-core CPU"


def test_machine_names_the_package_tree_it_imported() -> None:
    """A before/after run can check that each arm imported its own code."""
    import msa_agent

    facts = ttft.machine(torch.device("cpu"), "abc")
    assert facts["package"] == str(Path(msa_agent.__file__).resolve().parent)


@pytest.mark.parametrize("settle", [True, False])
def test_settle_times_each_request_after_the_prefetch_worker_is_idle(
        tmp_path: Path, tiny_pair, monkeypatch: pytest.MonkeyPatch, settle: bool) -> None:
    """A K/V read leaves a prefetch job behind; settled, no request starts while it runs."""
    texts = ttft.memory_texts(tiny_pair[1], 3, 24, SENTENCES)
    settings = ttft.Settings(memories=2, tokens=24, repeats=2, modes=("none", "full"),
                             question="Where does Alice work?", settle=settle)
    with Memory.open(tmp_path / "m", model=tiny_pair, chunk_size=8, prefetch=1,
                     **ttft.open_options(24)) as mem:
        ttft.fill(mem, texts)
        worker = mem._engine.prefetcher
        slow_load = worker._load

        def load(job) -> None:  # noqa: ANN001
            time.sleep(0.3)  # a job long enough that an unsettled next request meets it
            slow_load(job)

        monkeypatch.setattr(worker, "_load", load)
        idle_at_start: list[bool] = []
        answer = mem.answer

        def answer_and_note(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            idle_at_start.append(worker.wait(0))
            return answer(*args, **kwargs)

        monkeypatch.setattr(mem, "answer", answer_and_note)
        ttft.measure(mem, settings)
        assert worker.wait(60) and worker.busy_s >= 0.3  # the full reads did leave jobs
    assert len(idle_at_start) == 6
    assert all(idle_at_start) if settle else not all(idle_at_start)
