"""The real ``msa`` entry point in subprocesses: init, ingest, recall, forget, recall."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cli_fixtures import model_dir  # noqa: F401


def _msa(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "msa_agent.cli", *args, "--path", str(cwd / "space")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny model: one thread is fastest
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                          check=False)


def test_end_to_end(tmp_path: Path, model_dir: Path) -> None:  # noqa: F811
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "cat.md").write_text("My cat is called Ada and she is grey.")
    (folder / "tea.txt").write_text("Bob likes green tea in the morning.")
    assert _msa(tmp_path, "init", "--model", str(model_dir)).returncode == 0
    ingest = _msa(tmp_path, "ingest", str(folder), "--json")
    assert ingest.returncode == 0, ingest.stderr
    ids = {Path(i["source"]).name: i["id"] for i in json.loads(ingest.stdout)["ingested"]}
    hits = json.loads(_msa(tmp_path, "recall", "cat", "-k", "5", "--json").stdout)
    assert ids["cat.md"] in {h["id"] for h in hits}
    assert _msa(tmp_path, "forget", ids["cat.md"], "--yes").returncode == 0
    hits = json.loads(_msa(tmp_path, "recall", "cat", "-k", "5", "--json").stdout)
    assert [h["id"] for h in hits] == [ids["tea.txt"]]
