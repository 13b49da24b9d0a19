"""A writer killed with SIGKILL mid-stream leaves a consistent space that keeps working."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from msa_agent import Memory
from msa_agent.errors import ModelLoadError
from msa_agent.store import Space
from tests_helpers import make_llama, make_tokenizer

pytestmark = pytest.mark.filterwarnings("ignore::msa_agent.runtime.engine.RoutingQualityWarning")

WRITER = """
import sys, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, {tests!r})
from tests_helpers import make_llama, make_tokenizer
from msa_agent import Memory
mem = Memory.open({path!r}, model=(make_llama(), make_tokenizer()), chunk_size=8)
for i in range(10_000):
    mem.remember_many([f"fact {{i}}-{{j}}: the quick brown fox number {{j}}" for j in range(8)])
    print("committed", 8 * (i + 1), flush=True)
"""


def test_sigkill_during_writes_leaves_consistent_space(tmp_path: Path) -> None:
    path = tmp_path / "m"
    code = WRITER.format(tests=str(Path(__file__).parent), path=str(path))
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            cwd=str(tmp_path), env=env)
    committed = 0
    deadline = time.monotonic() + 120
    while committed < 40 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("committed"):
            committed = int(line.split()[1])
    time.sleep(0.05)  # land the kill somewhere inside a later write
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert committed >= 40, "writer did not get going"
    for line in proc.stdout:  # what it printed before the kill: committed, and flushed
        if line.startswith("committed"):
            committed = int(line.split()[1])

    with Space.open(path) as space:
        live = space.find(None, None, limit=None)
        # every printed batch is there; at most the one in flight also committed; none half
        assert committed <= len(live) <= committed + 8 and len(live) % 8 == 0
        for name in ("route_k", "pooled_k", "pooled_v"):
            rows = space.read(name, live)
            assert all(r.shape[0] == m.n_chunks and np.isfinite(r).all()
                       for r, m in zip(rows, live))
    with Memory.open(path, model=(make_llama(), make_tokenizer()), chunk_size=8) as mem:
        assert mem.recall("quick brown fox", k=3)
        mem.remember("after the crash")
        assert mem.stats().memories == len(live) + 1


def test_tokenizer_model_mismatch_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="tokenizer"):
        Memory.open(tmp_path / "m", model=(make_llama(vocab=100), make_tokenizer()))
    assert not (tmp_path / "m").exists()
