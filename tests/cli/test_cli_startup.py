"""`msa` answers help, version and bad input before importing the model stack.

Nothing here loads a model: every refusal below happens before ``Memory.open``, and the
subprocess checks prove it by the modules that were (not) imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import msa_agent
from msa_agent.cli import app
from msa_agent.errors import ModelLoadError
from msa_agent.model import hub

HEAVY = ("torch", "transformers", "zarr", "sqlalchemy", "numpy")  # (typer itself uses pydantic)
# runs `msa ARGS...` in a fresh interpreter, then prints the heavy modules it imported
_PROBE = """
import json, sys
from msa_agent.cli import main
HEAVY = json.loads(sys.argv[2])
sys.argv, code = ["msa", *json.loads(sys.argv[1])], 0
try:
    main()
except SystemExit as e:
    code = e.code or 0
print(json.dumps({"code": code, "heavy": sorted(m for m in HEAVY if m in sys.modules)}),
      file=sys.stderr)
"""


def _probe(*args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", _PROBE, json.dumps(args), json.dumps(HEAVY)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    return {**json.loads(run.stderr.strip().splitlines()[-1]), "stderr": run.stderr}


def test_importing_the_cli_is_light() -> None:
    code = f"import msa_agent.cli, sys; bad = [m for m in {HEAVY!r} if m in sys.modules]; " \
           "assert not bad, bad"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=False)
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize("args", [
    ["--help"], ["-h"], ["--version"], ["recall", "--help"], ["ingest", "-h"], ["ask", "-h"],
])
def test_help_and_version_import_no_model_stack(args: list[str]) -> None:
    out = _probe(*args)
    assert out["code"] == 0 and out["heavy"] == [], out


@pytest.mark.parametrize(("args", "code", "message"), [
    (["recall", "", "--path", "x"], 2, "error: query is empty"),
    (["ask", "   ", "--path", "x"], 2, "error: question is empty"),
    (["ask", "who?", "--read", "skim", "--path", "x"], 2, "must be one of auto, pooled"),
    (["stats", "--path", "nope"], 1, "error: no memory space at nope"),
    (["forget", "--where", "kind=x", "--yes", "--path", "nope"], 1, "no memory space"),
    (["ingest", "/missing/folder", "--path", "typo"], 1,
     "error: no such file or folder: /missing/folder"),
    (["import", "/missing/bundle.zip", "--path", "typo"], 2, "error: no bundle at /missing"),
    (["init", "--model", "./no/such/folder", "--path", "typo"], 1,
     "is neither a local folder nor a Hugging Face Hub id"),
])
def test_bad_input_is_refused_before_the_model_loads(tmp_path: Path, args: list[str], code: int,
                                                     message: str) -> None:
    out = _probe(*[a if a not in ("x", "nope", "typo") else str(tmp_path / a) for a in args])
    assert out["code"] == code and message.replace("nope", str(tmp_path / "nope")) in \
        out["stderr"], out
    assert "torch" not in out["heavy"] and "transformers" not in out["heavy"], out
    assert list(tmp_path.iterdir()) == []  # no space created anywhere


def test_version_and_short_help() -> None:
    runner = CliRunner()
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.stdout.strip() == f"msa-agent {msa_agent.__version__}"
    assert runner.invoke(app, ["-V"]).stdout == version.stdout
    assert "Usage: msa" in runner.invoke(app, ["-h"]).stdout
    assert "Usage: msa stats" in runner.invoke(app, ["stats", "-h"]).stdout


def test_path_help_is_not_eaten_as_markup() -> None:
    out = CliRunner().invoke(app, ["stats", "--help"]).stdout
    flat = " ".join(out.replace("│", " ").split())
    assert "(default: $MSA_PATH, else $XDG_DATA_HOME/msa-agent/default)" in flat


def test_refusals_create_nothing(tmp_path: Path) -> None:
    runner = CliRunner()
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "image.png").write_bytes(b"\x89PNG")
    cases = [
        (["ls", "--path", str(empty)], 1, "no memory space at"),
        (["ingest", str(tmp_path / "docs"), "--path", str(tmp_path / "s1")], 1,
         "nothing to ingest"),
        (["ingest", str(tmp_path / "docs"), "--encoding", "klingon", "--path",
          str(tmp_path / "s2")], 2, "unknown encoding 'klingon'"),
        (["import", str(tmp_path / "no-bundle"), "--path", str(tmp_path / "s3")], 2,
         "no bundle at"),
        (["export", str(tmp_path / "docs"), "--path", str(empty)], 2, "already exists"),
    ]
    for args, code, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == code and message in result.stderr, (args, result.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs", "empty"]
    assert list(empty.iterdir()) == []


def test_an_uncached_model_offline_fails_at_once(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    monkeypatch.setattr(hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(hub, "_hub_reachable", lambda endpoint, timeout=1.0: False)
    result = CliRunner().invoke(app, ["init", "--model", "someone/uncached-model", "--path",
                                      str(tmp_path / "space")])
    assert result.exit_code == 1
    assert "'someone/uncached-model'" in result.stderr and "hf download" in result.stderr
    assert not (tmp_path / "space").exists()


def test_require_fetchable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cache = tmp_path / "hf-cache"
    snapshot = cache / "models--org--cached" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (cache / "models--org--cached" / "refs").mkdir()
    (cache / "models--org--cached" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub.constants, "HF_HUB_OFFLINE", False)  # whatever the CI sets
    reachable = {"ok": False}
    monkeypatch.setattr(hub, "_hub_reachable", lambda endpoint, timeout=1.0: reachable["ok"])
    for fine in (None, hub.DEFAULT_MODEL, str(tmp_path), "org/cached"):
        hub.require_fetchable(fine)
    with pytest.raises(ModelLoadError, match="org/other"):
        hub.require_fetchable("org/other")
    with pytest.raises(ModelLoadError, match="neither a local folder nor a Hugging Face Hub id"):
        hub.require_fetchable(str(tmp_path / "typo-folder"))
    reachable["ok"] = True
    hub.require_fetchable("org/other")  # online: the Hub client fetches it
    monkeypatch.setattr(hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match="org/other"):
        hub.require_fetchable("org/other")


def test_load_model_checks_before_from_pretrained(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    from msa_agent.model import loader

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("from_pretrained must not be reached")

    monkeypatch.setattr(loader.AutoTokenizer, "from_pretrained", boom)
    monkeypatch.setattr(hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hub, "_hub_reachable", lambda endpoint, timeout=1.0: False)
    with pytest.raises(ModelLoadError, match="not-here"):
        loader.load_model("someone/not-here")


def test_hub_reachable_is_false_for_a_closed_port(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in hub._PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    assert not hub._hub_reachable("http://127.0.0.1:9", timeout=0.5)


def test_startup_script_records_medians_and_exit_codes(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    from msa_agent.bench import cli_startup

    rows = cli_startup.commands(tmp_path)
    labels = [label for label, _, _ in rows]
    assert labels[:5] == ["python -c pass", "msa --help", "msa --version",
                          "msa recall '' --path x", "msa stats --path nope"]
    monkeypatch.setattr(cli_startup, "commands", lambda scratch: [
        ("ok", [sys.executable, "-c", "pass"], {}),
        ("refused", [sys.executable, "-c", "raise SystemExit(3)"], {})])
    measured = cli_startup.measure(runs=3)
    assert [(r["command"], len(r["runs_s"]), r["exit_codes"]) for r in measured] == \
        [("ok", 3, [0]), ("refused", 3, [3])]
    assert all(r["median_s"] == sorted(r["runs_s"])[1] for r in measured)
    assert "| `refused` |" in cli_startup.table(measured)
