"""SIGKILL mid-write: after a real kill of a writing process, the FTS index matches exactly
the committed memories (no entry without a row, no row without an entry)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from lexical_helpers import assert_fts_consistent
from store_helpers import FP, SPECS

from msa_agent.store import Space

HERE = Path(__file__).parent

# The writer: batch i adds 8 memories, each with its own word "uniq<i>x<j>" and session "s<i>";
# every third batch also deletes the previous batch by ``where``. It reports each call that
# returned, so the test knows what must be there.
WRITER = """
import sys
from store_helpers import FP, make_data, mem
from msa_agent.store import NewMemory, Space

path, start = sys.argv[1], int(sys.argv[2])
with Space.open(path, FP, durable=False) as s:
    for i in range(start, start + 100_000):
        news = [NewMemory(text=f"uniq{i}x{j} shared words", session_id=f"s{i}", n_chunks=1,
                          n_tokens=3) for j in range(8)]
        s.add(news, [make_data(m, i) for m in news])
        print("added", i, flush=True)
        if i % 3 == 2:
            s.delete_where(None, {"session_id": f"s{i - 1}"})
            print("deleted", i - 1, flush=True)
"""


def _run_and_kill(path: Path, start: int, seen: int, rng: random.Random) -> list[str]:
    """Start the writer, let it report ``seen`` lines, kill it at a random moment after."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get(
        "PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(start)],
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    lines = [proc.stdout.readline().strip() for _ in range(seen)]
    time.sleep(rng.uniform(0, 0.05))
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the writer died before the kill"
    return [*lines, *out.splitlines()]


def _check(path: Path, lines: list[str], start: int) -> None:
    added = {int(x.split()[1]) for x in lines if x.startswith("added")}
    deleted = {int(x.split()[1]) for x in lines if x.startswith("deleted")}
    # The call after the last reported line may have committed unreported: after "added i"
    # with i % 3 == 2 that is the delete of batch i - 1, which may or may not be gone.
    last = lines[-1].split()
    in_flight = {int(last[1]) - 1} if last[0] == "added" and int(last[1]) % 3 == 2 else set()
    assert_fts_consistent(path)
    with Space.open(path, FP) as s:
        for i in added - deleted:  # every reported add is there and findable by its word
            hits = s.lexical_search(f"uniq{i}x3", 2, None)
            found = [s.get(h).session_id for h, _ in hits]  # type: ignore[union-attr]
            assert found == [f"s{i}"] or (i in in_flight and found == [])
        for i in deleted:
            assert s.lexical_search(f"uniq{i}x3", 2, None) == []
        for m in s.find():  # and every committed row is findable
            if int(m.session_id[1:]) >= start:  # type: ignore[index]
                word = m.text.split()[0]
                assert [h for h, _ in s.lexical_search(word, 2, None)] == [m.id]
        assert s.count() == len(s.lexical_search("shared", 100_000, None))


def test_sigkill_mid_write_keeps_index_exact(space_path: Path) -> None:
    Space.create(space_path, FP, SPECS, durable=False).close()
    rng = random.Random(12)
    for round_ in range(3):
        start = round_ * 10_000
        lines = _run_and_kill(space_path, start, seen=4 + round_ * 3, rng=rng)
        _check(space_path, lines, start)
