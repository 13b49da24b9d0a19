"""Issue 15, remote storage: memories written by one process through ``Memory`` are recalled
by another through PostgreSQL (metadata) and S3 (arrays, a moto server), with the writer's
own ranking. The writer is another process that keeps the space open (and locked) while this
one reads beside it, then writes more, which this reader picks up.

Needs PostgreSQL binaries and the remote extra; skips, saying why, without them
(tests/remote_fixtures.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from remote_fixtures import pg_url, s3_options, unique_name  # noqa: F401

from msa_agent import Memory
from msa_agent.store import RemoteLocation, SpaceLockedError

pytestmark = pytest.mark.filterwarnings("ignore::msa_agent.runtime.engine.RoutingQualityWarning")

QUERIES = ["note 3 ends", "ends 7.", "note 12", "what does note 1 say"]
WRITER = """
import json, sys, time, warnings
from pathlib import Path
warnings.simplefilter("ignore")
from msa_testing import make_llama, make_tokenizer
from test_concurrency import text
from msa_agent import Memory
where = json.loads(sys.argv[1])
queries = json.loads(sys.argv[2])

def recall(mem):
    return {q: [[h.id, h.score] for h in mem.recall(q, k=5)] for q in queries}

pair = (make_llama(), make_tokenizer())
with Memory.open(where["name"], model=pair, chunk_size=8, max_doc_tokens=64,
                 meta_url=where["meta_url"], arrays_url=where["arrays_url"],
                 storage_options=where["storage_options"]) as mem:
    ids = mem.remember_many([text(i) for i in range(10)])
    print(json.dumps({"ids": ids, "recall": recall(mem)}), flush=True)
    while not Path(where["go"]).exists():
        time.sleep(0.05)
    more = mem.remember_many([text(i) for i in range(10, 16)])
    mem.forget(ids[1])
    print(json.dumps({"ids": more, "recall": recall(mem)}), flush=True)
"""


def spawn_writer(where: dict[str, Any]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "OMP_NUM_THREADS": "1",
           "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, "-c", WRITER, json.dumps(where),
                             json.dumps(QUERIES)], stdout=subprocess.PIPE, text=True, env=env)


def next_report(proc: subprocess.Popen) -> dict[str, Any]:
    assert proc.stdout is not None
    while line := proc.stdout.readline():
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError(f"the writer process ended early (code {proc.wait()})")


def assert_same_recall(mem: Memory, want: dict[str, list[list[Any]]]) -> None:
    for q, hits in want.items():
        got = [[h.id, h.score] for h in mem.recall(q, k=5)]
        assert [i for i, _ in got] == [i for i, _ in hits], q
        assert [s for _, s in got] == pytest.approx([s for _, s in hits], rel=1e-5), q


def test_recalled_by_another_process_through_postgresql_and_s3(
        pg_url: str, s3_options: dict[str, Any], tiny_pair: Any, tmp_path: Path) -> None:  # noqa: F811
    name = unique_name()
    where = {"name": name, "meta_url": pg_url, "arrays_url": f"s3://msa-test/{name}",
             "storage_options": s3_options, "go": str(tmp_path / "go")}
    remote = {k: where[k] for k in ("meta_url", "arrays_url", "storage_options")}
    writer = spawn_writer(where)
    try:
        first = next_report(writer)
        assert len(first["ids"]) == 10 and all(first["recall"].values())
        with pytest.raises(SpaceLockedError):  # the writer holds the space's advisory lock
            Memory.open(name, model=tiny_pair, **remote)
        with Memory.open(name, model=tiny_pair, read_only=True, **remote) as mem:
            assert isinstance(mem.path, RemoteLocation) and "secret" not in str(mem.path)
            assert set(first["ids"]) <= {m.id for m in mem.list(limit=100)}
            assert_same_recall(mem, first["recall"])
            Path(where["go"]).touch()
            second = next_report(writer)
            assert writer.wait(timeout=120) == 0
            assert_same_recall(mem, second["recall"])  # followed the writer's later commits
            assert first["ids"][1] not in {m.id for m in mem.list(limit=100)}
            assert mem.get(second["ids"][0]).text.startswith("note 10:")
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    with Memory.open(name, model=tiny_pair, **remote) as mem:  # the lock left with the writer
        listed = {m.id for m in mem.list(limit=100)}
        assert set(first["ids"][:1] + first["ids"][2:] + second["ids"]) <= listed
        assert first["ids"][1] not in listed
