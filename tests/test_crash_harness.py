"""SIGKILL at random moments of add (remember_many), delete (forget), export, import and the
first create (issue 16, item 9). After each kill: the space opens, every acknowledged write is
there, every acknowledged forget stays forgotten, a batch is all there or not at all, and no
scratch folder (hidden copies of text and K/V) survives the next open.

Store and bundle layers, no model (a model adds only encoding before the same writes).
``test_crash_harness_quick`` runs 13 trials (CI); ``test_crash_harness_long`` runs 200 on
request (``MSA_STRESS=1``, marked slow), not in CI: it takes 8 to 16 minutes.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from bundle_helpers import FP, SPECS, import_into, make_space, rows_for

from msa_agent.runtime import bundle
from msa_agent.store import NewMemory, Space
from msa_agent.store.scratch import NEW_PREFIX

HERE = Path(__file__).parent
PER_BATCH = 4  # memories per add in the worker

WORKER = """
import sys, time
from pathlib import Path
from bundle_helpers import FP, SPECS, import_into, rows_for
from msa_agent.runtime import bundle
from msa_agent.store import NewMemory, Space

op, path, arg = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
if op == "export":
    import msa_agent.runtime.answer  # the manifest needs it; loading torch is not the test
if op == "create":
    print("ready", flush=True)
    Space.open_or_create(path, FP, SPECS, durable=False).close()
    print("created", flush=True)
    time.sleep(60)
with Space.open(path, FP, durable=False) as s:
    print("ready", flush=True)
    if op == "add":
        for i in range(int(arg), int(arg) + 100_000):
            news = [NewMemory(text=f"shared mark{i}x{j}", session_id=f"s{i}",
                              n_chunks=1 + j % 2, n_tokens=3) for j in range(4)]
            s.add(news, [rows_for(m, i) for m in news])
            print("added", i, flush=True)
    elif op == "delete":
        for i in range(int(arg)):
            s.delete_where(None, {"session_id": f"s{i}"})
            print("deleted", i, flush=True)
    elif op == "export":
        for i in range(100_000):
            bundle.export_space(s, None, Path(arg) / f"e{i}{'.zip' if i % 2 else ''}")
            print("exported", i, flush=True)
    elif op == "import":
        import_into(s, Path(arg), report=True)
        print("imported", flush=True)
    time.sleep(60)
"""


def _run_and_kill(args: list[str], delay: float) -> list[str]:
    """Start a worker, wait for ``ready``, kill it ``delay`` seconds later; its complete
    output lines (an acknowledgement counts only once its newline is out)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get(
        "PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", WORKER, *args], stdout=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stdout is not None
    first = proc.stdout.readline().strip()
    assert first == "ready", f"worker failed to start: {first!r}"
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the worker died before the kill"
    lines = out.splitlines()
    if out and not out.endswith("\n"):
        lines.pop()  # the kill tore the last line ("deleted" without its number): not an ack
    return lines


def _no_scratch(*folders: Path) -> None:
    """No scratch folder is left, except (killed in the microseconds between its mkdtemp and
    its lock) an empty ``.msa-new-*`` one, which holds no data and is removed later."""
    for f in folders:
        left = sorted(p.name for p in f.rglob(".msa-*")
                      if not (p.name.startswith(NEW_PREFIX) and
                              {c.name for c in p.iterdir()} <= {".owner"}))
        assert not left, f"scratch left in {f}: {left}"


def _sessions(s: Space) -> Counter:
    return Counter(m.session_id for m in s.find())


# ---------------------------------------------------------------------------------- trials
def trial_add(root: Path, rng: random.Random) -> bool:
    path = root / "space"
    Space.create(path, FP, SPECS, durable=False).close()
    lines = _run_and_kill(["add", str(path), "0"], rng.uniform(0.0, 0.6))
    acked = {int(x.split()[1]) for x in lines if x.startswith("added")}
    in_flight = max(acked, default=-1) + 1
    with Space.open(path, FP) as s:
        got = _sessions(s)
        for i in acked:
            assert got[f"s{i}"] == PER_BATCH, f"acknowledged batch {i} lost"
        assert set(got) <= {f"s{i}" for i in acked | {in_flight}}
        assert got[f"s{in_flight}"] in (0, PER_BATCH), "a batch committed in part"
        assert s.count() == len(s.lexical_search("shared", 10**6, None))
        s.read_all("route_k")
    _no_scratch(root)
    return True  # the worker loops: every kill lands mid-operation or between two


def trial_delete(root: Path, rng: random.Random) -> bool:
    path, n = root / "space", 40
    with Space.create(path, FP, SPECS, durable=False) as s:
        for i in range(n):
            news = [NewMemory(text=f"shared mark{i}x{j}", session_id=f"s{i}", n_chunks=1,
                              n_tokens=3) for j in range(PER_BATCH)]
            s.add(news, [rows_for(m, i) for m in news])
    lines = _run_and_kill(["delete", str(path), str(n)], rng.uniform(0.0, 0.5))
    acked = {int(x.split()[1]) for x in lines if x.startswith("deleted")}
    in_flight = max(acked, default=-1) + 1
    with Space.open(path, FP) as s:
        got = _sessions(s)
        for i in range(n):
            if i in acked:
                assert got[f"s{i}"] == 0, f"acknowledged forget {i} came back"
                assert s.lexical_search(f"mark{i}x1", 5, None) == []
            elif i != in_flight:
                assert got[f"s{i}"] == PER_BATCH, f"batch {i} lost without a forget"
        assert got[f"s{in_flight}"] in (0, PER_BATCH)
    for i in acked:  # the words of acknowledged forgets are in no file
        needle = f"mark{i}x1".encode()
        assert not [p for p in path.rglob("*") if p.is_file() and needle in p.read_bytes()]
    _no_scratch(root)
    return True  # the worker loops: every kill lands mid-operation or between two


def trial_export(root: Path, rng: random.Random) -> bool:
    path, out = root / "space", root / "out"
    out.mkdir()
    make_space(path, n=300).close()
    lines = _run_and_kill(["export", str(path), str(out)], rng.uniform(0.0, 1.5))
    acked = {int(x.split()[1]) for x in lines if x.startswith("exported")}
    for dest in out.iterdir():  # any bundle that appeared under its name is complete
        if dest.name.startswith("."):
            continue  # scratch
        manifest = bundle.read_manifest(dest)
        with bundle.memory_batches(dest, manifest):
            pass
        assert manifest.memories == 300
    assert {int(p.name[1:].split(".")[0]) for p in out.iterdir()
            if not p.name.startswith(".")} >= acked
    Space.open(path, FP).close()  # the next open removes the killed export's scratch copy
    _no_scratch(root)
    return True  # the worker loops: every kill lands mid-operation or between two


def trial_import(root: Path, rng: random.Random, src: Path) -> bool:
    path = root / "space"
    Space.create(path, FP, SPECS, durable=False).close()
    lines = _run_and_kill(["import", str(path), str(src)], rng.uniform(0.0, 1.5))
    acked = max((int(x.split()[1]) for x in lines if x.startswith("batch")), default=0)
    with Space.open(path, FP) as s:  # also removes the killed import's extraction
        n = s.count()
        assert n >= acked and (n % bundle.BATCH == 0 or n == 600), "a batch in part"
        assert import_into(s, src) == 600 - n  # a re-run completes it
        assert s.count() == 600
    _no_scratch(root)
    return "imported" not in lines


def trial_create(root: Path, rng: random.Random) -> bool:
    path = root / "space"
    lines = _run_and_kill(["create", str(path), "-"], rng.uniform(0.0, 0.4))
    if "created" in lines:
        assert Space.is_space(path)
    if path.exists() and any(path.iterdir()):
        Space.open(path, FP).close()  # never a half-made space
    else:  # nothing, or an empty folder: create works
        Space.open_or_create(path, FP, SPECS, durable=False).close()
    Space.open(path, FP).close()
    _no_scratch(root)
    return "created" not in lines


# ---------------------------------------------------------------------------------- runs
def run_trials(tmp: Path, counts: dict[str, int], seed: int) -> tuple[Counter, Counter]:
    """Run the trials; every check is an assert. Returns trials done and, of those, how many
    kills landed before the operation finished, per operation."""
    rng, done, mid = random.Random(seed), Counter(), Counter()
    with make_space(tmp / "src-space", n=600) as s:
        bundle.export_space(s, None, tmp / "src.zip")
    for op, n in counts.items():
        for t in range(n):
            root = tmp / f"{op}-{t}"
            root.mkdir()
            if op == "import":
                landed = trial_import(root, rng, tmp / "src.zip")
            else:
                landed = globals()[f"trial_{op}"](root, rng)
            done[op] += 1
            mid[op] += landed
    return done, mid


def test_crash_harness_quick(tmp_path: Path) -> None:
    counts = {"add": 3, "delete": 3, "create": 4, "import": 2, "export": 1}
    assert run_trials(tmp_path, counts, seed=16)[0] == Counter(counts)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("MSA_STRESS"), reason="the 200-trial run (8 to 16 min) "
                    "runs on request: MSA_STRESS=1 pytest tests/test_crash_harness.py -m slow -s")
def test_crash_harness_long(tmp_path: Path) -> None:
    counts = {"add": 50, "delete": 40, "create": 50, "import": 30, "export": 30}
    done, mid = run_trials(tmp_path, counts, seed=1600)
    print(f"trials {dict(done)}; killed before the operation finished {dict(mid)}")
    assert done == Counter(counts)
