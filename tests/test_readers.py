"""Readers beside a writer (issues 16 and 17): ``Memory.open(read_only=True)`` in two
processes recalls while a third writes; readers see only whole commits and, at the end,
everything; the stored keys equal a single-process encode; a reader never writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_concurrency import stored_keys, text

from msa_agent import Memory
from msa_agent.store import SpaceNotFoundError, SpaceReadOnlyError

pytestmark = pytest.mark.filterwarnings("ignore::msa_agent.runtime.engine.RoutingQualityWarning")

BATCHES, PER_BATCH = 12, 4
PRELUDE = """
import json, sys, time, warnings
from pathlib import Path
warnings.simplefilter("ignore")
from msa_testing import make_llama, make_tokenizer
from test_concurrency import text
from msa_agent import Memory
path = sys.argv[1]
pair = (make_llama(), make_tokenizer())
"""
WRITER = PRELUDE + f"""
with Memory.open(path, model=pair, chunk_size=8, max_doc_tokens=64) as mem:
    print("ready", flush=True)
    while not Path(path + ".go").exists():  # until both readers are open
        time.sleep(0.05)
    for i in range({BATCHES}):
        mem.remember_many([text(100 + {PER_BATCH} * i + j) for j in range({PER_BATCH})])
        time.sleep(0.2)
print("done", flush=True)
"""
READER = PRELUDE + """
seen, errors, recalls = [], [], 0
with Memory.open(path, model=pair, read_only=True) as mem:
    print("ready", flush=True)
    while True:
        stop = Path(path + ".stop").exists()
        try:
            hits = mem.recall("note ends", k=5)
            recalls += 1
            for h in hits:  # every hit is a whole, stored memory
                assert mem.get(h.id).text == h.text
            seen.append(mem.stats().memories)
        except Exception as exc:  # noqa: BLE001 - reported to the test
            errors.append(repr(exc))
        if stop:
            break
print(json.dumps({"recalls": recalls, "errors": errors, "seen": seen}), flush=True)
"""


def spawn(code: str, path: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "OMP_NUM_THREADS": "1",
           "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stdout is not None
    while (line := proc.stdout.readline()) and line.strip() != "ready":
        pass  # building the tiny model may print blank lines first
    assert line.strip() == "ready", "a worker failed to start"
    return proc


def test_two_readers_beside_a_writer(tmp_path: Path, tiny_pair) -> None:
    path = tmp_path / "m"
    with Memory.open(tmp_path / "ref", model=tiny_pair, chunk_size=8, max_doc_tokens=64) as ref:
        ref.remember_many([text(i) for i in range(PER_BATCH)])  # one process, in order
        whole = [ref.stats().memories]  # memories (parts) after each whole commit
        for i in range(BATCHES):
            ref.remember_many([text(100 + PER_BATCH * i + j) for j in range(PER_BATCH)])
            whole.append(ref.stats().memories)
    with Memory.open(path, model=tiny_pair, chunk_size=8, max_doc_tokens=64) as mem:
        mem.remember_many([text(i) for i in range(PER_BATCH)])
    writer = spawn(WRITER, path)
    other = spawn(READER, path)  # reader 1: another process
    seen = []
    with Memory.open(path, model=tiny_pair, read_only=True) as mem:  # reader 2: this one
        Path(f"{path}.go").touch()
        while writer.poll() is None:
            hits = mem.recall("note ends", k=5)
            assert all(mem.get(h.id).text == h.text for h in hits)
            seen.append(len(mem._engine.index))
        assert writer.returncode == 0
        mem.recall("note ends", k=1)  # picks up the last commit
        assert len(mem._engine.index) == mem.stats().memories == whole[-1]
    Path(f"{path}.stop").touch()
    report = json.loads(other.communicate(timeout=120)[0].strip().splitlines()[-1])
    assert report["errors"] == [] and report["recalls"] > 0 and seen
    for counts in (seen, report["seen"]):  # whole commits only, never fewer than before
        assert counts == sorted(counts) and set(counts) <= set(whole)
    assert len(set(seen) | set(report["seen"])) > 1, "the readers saw no commit land"
    got, want = stored_keys(path), stored_keys(tmp_path / "ref")
    assert sorted(got) == sorted(want)
    assert all(np.array_equal(got[t], want[t]) for t in want)


def test_a_reader_never_writes_and_needs_a_space(tmp_path: Path, tiny_pair) -> None:
    path = tmp_path / "m"
    with Memory.open(path, model=tiny_pair, chunk_size=8) as mem:
        mid = mem.remember("Paris is the capital of France.")
    with Memory.open(path, model=tiny_pair, read_only=True) as mem:
        for write in (lambda: mem.remember("x"), lambda: mem.forget(mid),
                      lambda: mem.update(mid, text="y"), lambda: mem.compact()):
            with pytest.raises(SpaceReadOnlyError, match="read-only"):
                write()
        assert [h.id for h in mem.recall("capital", k=1)] == [mid]
    with Memory.open(path, model=tiny_pair) as mem:  # nothing changed
        assert mem.get(mid).text == "Paris is the capital of France."
        assert mem.stats().memories == 1
    with pytest.raises(SpaceNotFoundError):
        Memory.open(tmp_path / "missing", model=tiny_pair, read_only=True)
    assert not (tmp_path / "missing").exists()


def _same(a: Memory, b: Memory, query: str) -> None:
    """Two views of one space rank alike: ids, order, scores and the index's own order."""
    got = [(h.id, h.score) for h in a.recall(query, k=20, routing="msa")]
    want = [(h.id, h.score) for h in b.recall(query, k=20, routing="msa")]
    assert got == want
    assert a._engine.index.doc_ids == b._engine.index.doc_ids


def test_reader_follows_commits_without_reloading(tmp_path: Path, tiny_pair,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """After the first load a reader reads only the keys of memories added or updated since,
    drops forgotten ones, and ranks exactly as a freshly opened reader; a compaction (every
    row moves) reloads everything."""
    from msa_agent.store import Space

    path, query = tmp_path / "m", "note ends"
    full_reads: list[int] = []
    read_all = Space.read_all
    monkeypatch.setattr(Space, "read_all", lambda self, name: (full_reads.append(1),
                                                               read_all(self, name))[1])
    with Memory.open(path, model=tiny_pair, chunk_size=8, max_doc_tokens=64) as writer:
        ids = writer.remember_many([text(i) for i in range(6)])
        with Memory.open(path, model=tiny_pair, read_only=True) as reader:
            reader.recall(query, k=3)
            assert full_reads  # the reader's first load reads every key
            writer.remember_many([text(i) for i in range(6, 9)])
            writer.forget(ids[1])
            writer.update(ids[3], text=text(40))
            writer.remember(text(41))
            before = len(full_reads)
            reader.recall(query, k=3)
            assert len(full_reads) == before  # followed incrementally
            with Memory.open(path, model=tiny_pair, read_only=True) as fresh:
                _same(reader, fresh, query)
            writer.compact()
            before = len(full_reads)
            reader.recall(query, k=3)
            assert len(full_reads) == before + 1  # a compaction moves every row: full load
            with Memory.open(path, model=tiny_pair, read_only=True) as fresh:
                _same(reader, fresh, query)
