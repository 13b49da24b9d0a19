"""The Memory Parallel recall benchmark end to end on CPU: 2 gloo ranks launched by torchrun
over a tiny synthetic space (the tiny random test model's config and tokenizer), every stage
timed and the sharded hits equal to the single process's; then world 1 reusing that space."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from msa_agent.bench import parallel_recall as pr
from msa_testing import make_llama, make_tokenizer

ROOT = Path(__file__).resolve().parents[2]
QUERIES, CHECK = 3, 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(world: int, tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(world),
         "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
         "-m", "msa_agent.bench.parallel_recall", "--device", "cpu", "--sizes", "20000",
         "--out", str(tmp / "out"), "--work", str(tmp / "work"),
         "--model-dir", str(tmp / "model"), "--queries", str(QUERIES), "--warmup", "1",
         "--check", str(CHECK), "--batch-docs", "64", "--commit", "test"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """World 2 (fills the space), then world 1 (reuses it): the out folder and stdouts."""
    tmp = tmp_path_factory.mktemp("parallel-recall")
    make_llama().config.save_pretrained(tmp / "model")
    make_tokenizer().save_pretrained(tmp / "model")
    outs = []
    for world in (2, 1):
        done = _launch(world, tmp)
        assert done.returncode == 0, done.stderr[-3000:]
        outs.append(done.stdout)
    return tmp / "out", outs


def _result(out: Path, world: int) -> dict[str, Any]:
    return json.loads((out / f"parallel-recall-w{world}-2e4.json").read_text())


@pytest.mark.parametrize("world", [2, 1])
def test_every_rank_timed_every_stage_and_matched_one_process(runs: tuple[Path, list[str]],
                                                              world: int) -> None:
    r = _result(runs[0], world)
    assert r["complete"] and r["world"] == world and r["backend"] == "gloo"
    assert r["env"]["commit"] == "test" and "parallel_recall" in r["env"]["command"]
    ranks = r["ranks"]
    assert [x["rank"] for x in ranks] == list(range(world))
    assert sum(x["docs"] for x in ranks) == r["memories"] > 0
    assert sum(x["chunks"] for x in ranks) == r["single_process"]["chunks"]
    assert all(x["resident_key_dtype"] == "bfloat16" and x["open_seconds"] > 0 for x in ranks)
    for mode in pr.MODES:
        m = r[mode]
        assert m["plain"]["n"] == QUERIES and len(m["plain_by_rank"]) == world
        assert set(m["groups"]) == set(pr.GROUPS) and m["total"]["n"] == QUERIES
        for stage in ("forward", "broadcast", "local_rank", "gather_merge", "owner_rows",
                      "evidence", "fetch"):
            assert m["groups"][stage]["p50_ms"] > 0, (mode, stage)
        assert r["check"][mode] == {"queries": CHECK, "ids_equal": CHECK,
                                    "max_score_diff": 0.0, "first_mismatch": None}
    assert r["hybrid"]["groups"]["lexical"]["p50_ms"] > 0
    assert r["msa"]["groups"]["lexical"]["p50_ms"] == 0
    assert r["hybrid"]["source_in_top_k"] == 1.0  # the lexical channel finds the source


def test_the_second_run_reused_the_space_and_printed_tables(runs: tuple[Path, list[str]]
                                                            ) -> None:
    out, stdouts = runs
    two, one = _result(out, 2), _result(out, 1)
    assert two["fill"] == one["fill"] and two["query_example"] == one["query_example"]
    assert "| 2 | 0.02M |" in stdouts[0] and "| 1 | 0.02M |" in stdouts[1]
    assert "msa 2/2, hybrid 2/2" in stdouts[1]
    assert pr.table([one, two]).count("\n") == 3
    assert pr.stage_table([one, two]).count("| hybrid |") == 2


def test_size_tags() -> None:
    assert [pr.size_tag(n) for n in (10_000_000, 100_000_000, 20_000, 1500)] == \
        ["1e7", "1e8", "2e4", "1.5e3"]
