"""Threads sharing one Memory: writes, updates, forgets, reads and answers at once store
exactly what one thread would, and no call fails (issue 16: hooks on the shared model,
generation outside the lock)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from msa_agent import Memory
from msa_agent.store import Space

pytestmark = pytest.mark.filterwarnings("ignore::msa_agent.runtime.engine.RoutingQualityWarning")

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima".split()
ROUNDS = 3  # each worker repeats its script this many times
TRIALS = int(os.environ.get("MSA_THREAD_TRIALS", "1"))  # more for one-off runs


def text(i: int) -> str:
    """A distinct text of 15 to 60 tokens (several 8-token chunks), different per ``i``."""
    words = [WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(4 + i % 9)]
    return f"note {i}: " + " ".join(words) + f" ends {i}."


def open_mem(path: Path, pair) -> Memory:  # noqa: ANN001
    return Memory.open(path, model=pair, chunk_size=8, max_doc_tokens=64)


def stored_keys(path: Path) -> dict[tuple[str, int], np.ndarray]:
    """Routing-key rows of every live memory, by (its source's whole text, part number):
    a text past ``max_doc_tokens`` is stored as several parts."""
    with Space.open(path) as space:
        live = space.find(limit=None)
        sources: dict[str, list] = {}
        for m in sorted(live, key=lambda m: m.part):
            sources.setdefault(m.source_id or m.id, []).append(m.text)
        whole = {s: "".join(parts) for s, parts in sources.items()}
        return {(whole[m.source_id or m.id], m.part): k
                for m, k in zip(live, space.read("route_k", live))}


def writer(mem: Memory, base: int, log: list[list[str]]) -> Callable[[], None]:
    """Remember single texts and pairs (the reference replays the same calls)."""
    def run() -> None:
        for r in range(ROUNDS):
            i = base + 10 * r
            batches = [[text(i)], [text(i + 1), text(i + 2)], [text(i + 3)]]
            for b in batches:
                mem.remember_many(b)
                log.append(b)
    return run


def updater(mem: Memory, base: int, log: list[list[str]]) -> Callable[[], None]:
    """Updates both ways: remember the new version and forget the old one (as the LangGraph
    store did), and ``Memory.update`` in place (the stored text is the new one's)."""
    def run() -> None:
        for r in range(ROUNDS):
            old = mem.remember(text(base + 3 * r))
            mem.remember(text(base + 3 * r + 1))
            log.append([text(base + 3 * r + 1)])
            mem.forget(old)
            mem.forget(where={"session_id": "none-such"})
            draft = mem.remember(f"draft of {base + 3 * r + 2}")
            mem.update(draft, text=text(base + 3 * r + 2))
            log.append([text(base + 3 * r + 2)])
    return run


def reader(mem: Memory) -> Callable[[], None]:
    def run() -> None:
        for r in range(ROUNDS * 2):
            mem.recall(f"bravo delta {r}", k=3)
            mem.recall("golf", k=2, routing="msa", explain=True)
            mem.list(limit=5)
    return run


def answerer(mem: Memory, stream: bool) -> Callable[[], None]:
    def run() -> None:
        for r in range(ROUNDS):
            out = mem.answer(f"what is note {r}?", k=2, max_new_tokens=6, stream=stream)
            if stream:
                assert isinstance("".join(out), str) and out.answer is not None
    return run


def run_all(jobs: list[Callable[[], None]]) -> list[BaseException]:
    errors: list[BaseException] = []

    def guarded(job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException as exc:  # noqa: BLE001 - collected and reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(j,)) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


@pytest.mark.parametrize("trial", range(TRIALS))
def test_threads_store_what_one_thread_would(tmp_path: Path, tiny_pair, trial: int) -> None:
    """Writers, an updater, readers and answerers (streamed and not) at once: no call raises,
    and every stored routing key equals, bit for bit, a single-threaded encoding of the same
    calls; the resident index holds exactly the live memories."""
    log: list[list[str]] = []
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        mem.remember_many([text(900 + i) for i in range(4)])  # something to recall at once
        log.append([text(900 + i) for i in range(4)])
        jobs = [writer(mem, 0, log), writer(mem, 100, log), updater(mem, 500, log),
                reader(mem), answerer(mem, False), answerer(mem, True)]
        errors = run_all(jobs)
        assert errors == [], [repr(e) for e in errors]
        assert len(mem._engine.index) == mem.stats().memories
    with open_mem(tmp_path / "ref", tiny_pair) as ref:
        for batch in log:  # the same write calls, one after the other
            ref.remember_many(batch)
    got, want = stored_keys(tmp_path / "m"), stored_keys(tmp_path / "ref")
    assert sorted(got) == sorted(want)
    wrong = [t for t in want if not np.array_equal(got[t], want[t])]
    assert wrong == [], f"{len(wrong)}/{len(want)} memories stored wrong routing keys"


def test_a_paused_stream_blocks_no_one(tmp_path: Path, tiny_pair) -> None:
    """A stream holds no lock between tokens: while its caller pauses mid-answer, another
    thread writes, recalls and answers (a held lock would hang it: the join below fails), and
    the paused answer then finishes exactly as if nothing had happened in between."""
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        mem.remember_many([text(i) for i in range(6)])
        want = mem.answer("what is note 1?", k=2, max_new_tokens=8)
        stream = mem.answer("what is note 1?", k=2, max_new_tokens=8, stream=True)
        pieces = iter(stream)
        first = next(pieces)
        errors: list[BaseException] = []
        other = threading.Thread(target=lambda: errors.extend(
            run_all([writer(mem, 200, []), reader(mem), answerer(mem, True)])))
        other.start()
        other.join(timeout=300)  # generous: only a deadlock takes this long
        assert not other.is_alive(), "a paused stream blocked another thread"
        assert errors == [], [repr(e) for e in errors]
        rest = "".join(pieces)
    assert stream.answer is not None
    assert stream.answer.text == want.text == (first + rest).strip()


OTHER_PROCESS = """
import json, sys, warnings
warnings.simplefilter("ignore")
from msa_agent import Memory
from msa_agent.errors import MsaError
from msa_testing import make_llama, make_tokenizer
try:
    with Memory.open(sys.argv[1], model=(make_llama(), make_tokenizer()), chunk_size=8) as mem:
        mem.recall("capital", k=1)
    print(json.dumps({"opened": True}))
except MsaError as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
"""


def test_a_second_process_is_refused_clearly(tmp_path: Path, tiny_pair) -> None:
    """While one process has the space open, another process's open (to recall) is refused
    with ``SpaceLockedError``, one of our errors, that says what to do; nothing changes."""
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        mem.remember("Paris is the capital of France.")
        out = other_process(tmp_path / "m")
        assert out["error"] == "SpaceLockedError"
        assert "open for writing elsewhere" in out["message"] and "close it" in out["message"]
        assert mem.stats().memories == 1  # the refused open changed nothing


def other_process(space: Path) -> dict:
    """Run ``OTHER_PROCESS`` on ``space`` in a fresh interpreter; its one-line JSON report."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", OTHER_PROCESS, str(space)], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])
