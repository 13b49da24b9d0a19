"""Memory Parallel (issue 15): routing keys sharded over 2 gloo processes launched by torchrun
recall exactly what one process recalls (ids, order, scores, per-layer evidence, channels),
with scope filters, ties and k above a shard's size; the shard-and-merge rule equals the
unsharded top-k for 1-4 shards (in-process, no processes)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from msa_agent import Memory
from msa_agent.runtime.parallel import local_top, merge_top, shard_of
from msa_agent.runtime.routing import RoutingIndex, top_docs
from msa_testing import make_llama, make_tokenizer

pytestmark = pytest.mark.filterwarnings("ignore::msa_agent.errors.RoutingQualityWarning")
TESTS = Path(__file__).resolve().parents[1]
WORDS = ["violin", "tuesday", "garage", "kelvarth", "brakel", "lisbon", "acme", "tea", "fox"]
TWIN = "Ada the cat sleeps in the garage on tuesday."  # stored three times: tied scores
# (query, k, namespace, where, routing, hops): namespace b holds 30 memories, 15 a rank
CASES: list[tuple[str, int, str, dict | None, str, int]] = [
    ("Where does Ada the cat sleep?", 5, "b", None, "msa", 1),
    ("Where does Ada the cat sleep?", 25, "b", None, "msa", 1),  # k above a shard's 15
    ("kelvarth brakel lisbon", 40, "b", None, "msa", 1),  # k above the scope: all 30
    ("violin on tuesday", 7, "a", None, "msa", 1),
    ("violin on tuesday", 12, "b", {"even": True}, "msa", 1),
    ("acme tea fox", 30, "b", {"even": False}, "msa", 1),
    ("acme tea fox", 3, "a", {"even": False}, "msa", 1),  # an empty scope
    ("the cat in the garage", 6, "b", None, "hybrid", 1),
    ("kelvarth", 9, "b", {"even": True}, "hybrid", 1),
    ("garage tuesday", 5, "b", None, "lexical", 1),
    ("Where is the violin?", 4, "b", None, "msa", 2),  # memory interleave: two rounds
]
WORKER = """
import json, sys, warnings
warnings.simplefilter("ignore")
import torch
import torch.distributed as dist
from msa_testing import make_llama, make_tokenizer
from test_parallel import collect
from msa_agent.parallel import ParallelMemory
path, cases, out = sys.argv[1], json.loads(open(sys.argv[2]).read()), sys.argv[3]
with ParallelMemory.open(path, (make_llama(), make_tokenizer())) as mem:
    shard = mem._engine.index.rows
    hits, kv = collect(mem, cases)
torch.save(kv, f"{out}.kv.{dist.get_rank()}")
with open(f"{out}.{dist.get_rank()}", "w") as f:
    json.dump({"hits": hits, "rows": shard, "world": dist.get_world_size()}, f)
dist.destroy_process_group()
"""


def collect(mem: Memory, cases: list) -> tuple[list[list[dict[str, Any]]], list]:
    """Every case's hits, through JSON (exact: floats round-trip), and the pooled K/V of the
    memories of cases 1 and 6 (the workers run this too, on ``ParallelMemory``)."""
    hits = json.loads(json.dumps([[
        {"id": h.id, "score": h.score, "round": h.round, "via": h.via,
         "layers": h.explanation.layer_scores, "chunk": h.explanation.best_chunk,
         "channels": h.explanation.channels}
        for h in mem.recall(q, k=k, namespace=ns, where=w, routing=r, hops=n, explain=True)]
        for q, k, ns, w, r, n in cases]))
    kv = [mem._engine.read_kv("pooled", [mem._engine.get(h["id"]) for h in hits[i]])
          for i in (1, 6)]
    return hits, kv


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 memories of 3-27 chunks (580 rows), namespaces a (10) and b (30); TWIN three
    times."""
    path = tmp_path_factory.mktemp("parallel") / "s"
    items = [{"text": " ".join(WORDS[(i * j) % 9] for j in range(1, 4 + (i * 7) % 40)) + f" {i}",
              "namespace": "a" if i % 4 == 0 else "b", "metadata": {"i": i, "even": i % 2 == 0}}
             for i in range(37)]
    items += [{"text": TWIN, "namespace": "b", "metadata": {"i": 37 + t, "even": True}}
              for t in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Memory.open(path, (make_llama(), make_tokenizer()), namespace="b",
                         chunk_size=8) as mem:
            mem.remember_many(items)
    return path


def test_two_gloo_ranks_recall_exactly_what_one_process_does(space: Path, tmp_path: Path
                                                             ) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Memory.open(space, (make_llama(), make_tokenizer()), read_only=True) as mem:
            (expected, kv), rows = collect(mem, CASES), mem.stats().chunks
    (tmp_path / "cases.json").write_text(json.dumps(CASES))
    (tmp_path / "worker.py").write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS / "runtime"),
                                          os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
         str(tmp_path / "worker.py"), str(space), str(tmp_path / "cases.json"),
         str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"out.{r}").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert sum(r["rows"] for r in ranks) == rows and min(r["rows"] for r in ranks) > 0
    assert len(expected[1]) == 25 and len(expected[2]) == 30  # k above a shard's 15
    tied = [h["score"] for h in expected[0] if h["id"] in _twin_ids(space)]
    assert len(tied) == 3 and len(set(tied)) == 1  # the three equal texts tie
    assert max(h["round"] for h in expected[-1]) == 2
    for got in (ranks[0]["hits"], ranks[1]["hits"]):
        for case, want, have in zip(CASES, expected, got):
            assert have == want, case  # exact: ids, order, float scores, evidence
    for r in (0, 1):  # the owners' pooled K/V, sent to every rank: the stored rows exactly
        sent = torch.load(tmp_path / f"out.kv.{r}")
        assert [len(x) for x in sent] == [len(x) for x in kv] == [25, 0]
        assert all(torch.equal(a, b) for x, y in zip(sent, kv) for p, q in zip(x, y)
                   for a, b in zip(p, q))


def _twin_ids(path: Path) -> set[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Memory.open(path, (make_llama(), make_tokenizer()), read_only=True) as mem:
            return {m.id for m in mem.list(namespace="b", limit=None) if m.text == TWIN}


@settings(max_examples=60, deadline=None)
@given(world=st.integers(1, 4), scores=st.lists(st.sampled_from([-1.5, 0.0, 0.25, 0.5, 2.0]),
                                                min_size=1, max_size=40),
       k=st.integers(1, 45), data=st.data())
def test_merge_of_shard_tops_is_the_unsharded_top_k(world: int, scores: list[float], k: int,
                                                    data: st.DataObject) -> None:
    """The merge rule alone, on given scores full of ties: exactly ``top_docs``'s list."""
    mask = torch.tensor(data.draw(st.lists(st.booleans(), min_size=len(scores),
                                           max_size=len(scores))))
    doc = torch.tensor(scores).masked_fill(~mask, float("-inf"))  # as RoutingIndex.rank masks
    n_in = int(mask.sum())
    want = [(p, float(doc[p])) for p in top_docs(doc, min(k, n_in))] if n_in else []
    got: list[tuple[int, float]] = []
    for rank in range(world):
        mine = list(shard_of(len(scores), rank, world))
        n_mine = int(mask[mine].sum())
        local = top_docs(doc[mine], min(k, n_mine)) if n_mine else []
        got += [(mine[d], float(doc[mine][d])) for d in local]
    assert merge_top(got, k) == want


@settings(max_examples=25, deadline=None)
@given(world=st.integers(1, 4), n=st.integers(1, 30), k=st.integers(1, 35),
       combine=st.sampled_from(["heads", "mean", "max"]), seed=st.integers(0, 2**16),
       twins=st.integers(0, 4))
def test_sharded_indexes_rank_as_the_whole(world: int, n: int, k: int, combine: str, seed: int,
                                           twins: int) -> None:
    """Shards of a RoutingIndex, each ranked and merged, select the whole index's top-k.
    Scores to 1e-6, not bit for bit: a GEMM over a block of under ~16 chunks (these indexes
    are tiny) may round the last bit differently from one over more (CPU BLAS, measured),
    so near-ties may swap; the recall test above, on shards of ~290 chunks, is exact."""
    g = torch.Generator().manual_seed(seed)
    keys = [torch.randn(int(c), 2, 2, 4, generator=g)
            for c in torch.randint(1, 4, (n,), generator=g)]
    for t in range(min(twins, n - 1)):  # equal keys: tied scores across shards
        keys[t + 1] = keys[0].clone()
    mask = torch.rand(n, generator=g) > 0.2
    q = torch.randn(3, 2, 4, 4, generator=g)
    full = _index(range(n), keys)
    want = full.rank(q, n, mask, combine, explain=False)
    truth = dict(zip(want.docs, want.scores))
    got = []
    for rank in range(world):
        mine = shard_of(n, rank, world)
        got += local_top(_index(mine, keys), rank, world, q, k, mask[list(mine)], combine)
    merged = merge_top(got, k)
    assert len(merged) == min(k, int(mask.sum()))
    assert [s for _, s in merged] == pytest.approx(want.scores[:k], rel=1e-6, abs=1e-6)
    assert [truth[p] for p, _ in merged] == pytest.approx([s for _, s in merged], rel=1e-6,
                                                          abs=1e-6)


def _index(positions: range, keys: list[torch.Tensor]) -> RoutingIndex:
    index = RoutingIndex()
    index.add([f"m{p}" for p in positions], ["x"] * len(positions), [keys[p] for p in positions])
    return index
