"""Every ``msa`` command through Typer's CliRunner, on a tiny random model."""
# ruff: noqa: F811 - pytest fixtures imported from cli_fixtures are parameters here

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cli_fixtures import Msa, docs, model_dir, msa  # noqa: F401
from typer.testing import CliRunner

from msa_agent.cli import app
from msa_agent.cli.common import default_path, space_path
from tests_helpers import make_llama, make_tokenizer


def test_init_and_stats(msa, model_dir: Path) -> None:
    stats = msa.json("stats")
    assert stats["memories"] == 0 and stats["model"] == str(model_dir)
    assert "memories" in msa("stats").stdout
    assert msa.json("init")["path"] == str(msa.space)  # opening again just checks it
    assert stats["dtype"] == "float32"


def test_init_in_bfloat16_and_the_space_keeps_it(tmp_path: Path, model_dir: Path) -> None:
    cli = Msa(tmp_path / "space")
    assert cli.json("init", "--model", str(model_dir), "--dtype", "bfloat16")["dtype"] == \
        "bfloat16"
    cli("ingest", "-", input="alpha beta gamma")  # no --dtype: the space's own
    stats = cli.json("stats")
    assert stats["dtype"] == "bfloat16" and stats["memories"] == 1
    assert "(bfloat16)" in cli("stats").stdout
    last = cli("init", "--dtype", "float32", code=1).stderr.strip().splitlines()[-1]
    assert "computed in bfloat16" in last and "dtype='bfloat16'" in last
    bad = cli("init", "--dtype", "float64", code=2)  # not a dtype: a usage error, ours
    assert "invalid memory settings: dtype:" in bad.output and "'float64'" in bad.output


def test_ingest_folder_then_ls_show_recall(msa, docs: Path) -> None:
    out = msa.json("ingest", str(docs), "--meta", "project=x", "--meta", "n:=3")
    assert sorted(Path(i["source"]).name for i in out["ingested"]) == \
        ["chat.jsonl", "paris.md", "tea.txt"]
    rows = msa.json("ls")
    assert {r["kind"] for r in rows} == {"document", "session"}
    chat = next(r for r in rows if r["kind"] == "session")
    assert chat["session_id"] == "chat" and chat["text"].startswith("user: my cat")
    shown = msa.json("show", rows[0]["id"])
    assert shown["metadata"]["project"] == "x" and shown["metadata"]["n"] == 3
    assert rows[0]["id"] in msa("show", rows[0]["id"]).stdout
    hits = msa.json("recall", "capital of France", "-k", "2", "--where", "kind=document")
    assert len(hits) == 2 and {h["kind"] for h in hits} == {"document"}
    table = msa("recall", "capital of France", "-k", "1", "--explain").stdout
    assert "recall: capital of France" in table and "matched:" in table
    assert len(msa.json("recall", "capital", "-k", "2", "--hops", "auto")) == 2
    msa("recall", "capital", "--hops", "0", code=2)


def test_ask_answers_and_shows_the_evidence(msa, docs: Path) -> None:
    msa("ingest", str(docs))
    ans = msa.json("ask", "capital of France?", "-k", "2", "--max-new-tokens", "3")
    # read: the default, auto; an extractive answer (the default format) may end before the cap
    assert ans["read"] == "chunks" and 1 <= ans["generated_tokens"] <= 3
    assert len(ans["rounds"][0]["memories"]) == 2
    shown = msa("ask", "capital of France?", "-k", "1", "--read", "text",
                "--max-new-tokens", "2").stdout
    assert "read=text" in shown and re.search(r"generated [12]\b", shown)
    msa("ask", "capital?", "--read", "telepathy", code=2)
    msa("ask", "capital?", "--hops", "x", code=2)


def test_ingest_stdin_with_kind_and_namespace(msa) -> None:
    result = msa("ingest", "-", "--kind", "note", "--namespace", "work", "--json",
                 input="standup moved to 10:00")
    assert '"ingested"' in result.stdout
    rows = msa.json("ls", "--namespace", "work")
    assert rows[0]["kind"] == "note" and rows[0]["metadata"]["source"] == "stdin"
    assert msa.json("ls") == []  # other namespace


def test_ingest_reports_unreadable_files_and_keeps_going(msa, docs: Path) -> None:
    (docs / "bad.txt").write_bytes(b"\xff\xfe not utf-8")
    (docs / "ctrl.md").write_text("\x01" * 50 + "mostly control characters")  # refused by SDK
    (docs / "broken.jsonl").write_text("not json\n")
    result = msa("ingest", str(docs), "--include", "*.md", "--include", "*.txt",
                 "--include", "*.jsonl", "--include", "*.png")
    err = result.stderr
    assert "bad.txt: not UTF-8" in err and "image.png: binary" in err
    assert "ctrl.md" in err and "broken.jsonl: line 1" in err
    assert "ingested 3 source(s), skipped 4" in result.stdout
    assert msa.json("stats")["memories"] == 3


def test_ingest_200_files_shows_progress(msa, tmp_path: Path) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(200):
        (folder / f"note{i:03}.txt").write_text(f"note number {i}: buy {i} apples")
    (folder / "zz-unreadable.txt").write_bytes(b"\x00\x01\x02")
    result = msa("ingest", str(folder))
    assert "ingesting" in result.stderr and "201/201" in result.stderr
    assert "tok/s" in result.stderr
    assert "zz-unreadable.txt: binary file" in result.stderr
    assert msa.json("stats")["memories"] == 200


def test_ingest_nothing_readable_exits_1(msa, tmp_path: Path) -> None:
    result = msa("ingest", str(tmp_path / "missing.md"), code=1)
    assert "no such file or folder" in result.stderr


def test_forget_by_id_asks_first(msa, docs: Path) -> None:
    msa("ingest", str(docs))
    first = msa.json("ls")[0]["id"]
    msa("forget", first, input="n\n", code=1)  # declined: aborted, nothing deleted
    assert len(msa.json("ls")) == 3
    assert "forgot 1 memory" in msa("forget", first, input="y\n").stdout
    assert first not in {r["id"] for r in msa.json("ls")}
    assert msa.json("forget", msa.json("ls")[0]["id"], "--yes") == {"deleted": 1}


def test_forget_where(msa, docs: Path) -> None:
    msa("ingest", str(docs))
    assert msa.json("forget", "--where", "kind=session", "--yes") == {"deleted": 1}
    assert msa.json("forget", "--where", "kind=session", "--yes") == {"deleted": 0}
    assert {r["kind"] for r in msa.json("ls")} == {"document"}


def test_errors_are_one_line_with_meaningful_codes(msa) -> None:
    result = msa("show", "nope", code=1)
    assert result.stderr.strip().splitlines()[-1] == "error: no memory with id 'nope'"
    assert "Traceback" not in result.output
    msa("forget", "nope", "--yes", code=1)
    msa("forget", code=2)  # neither id nor --where
    msa("recall", "q", "--where", "novalue", code=2)
    msa("recall", "   ", code=2)  # InvalidInputError is a usage error
    msa("recall", "q", "-k", "0", code=2)


def test_read_commands_do_not_create_a_space(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["ls", "--path", str(tmp_path / "typo")])
    assert result.exit_code == 1 and "no memory space at" in result.stderr
    assert not (tmp_path / "typo").exists()


def test_debug_shows_the_exception(msa) -> None:
    result = CliRunner().invoke(app, ["--debug", "show", "nope", "--path", str(msa.space)])
    assert result.exit_code == 1 and type(result.exception).__name__ == "UnknownMemoryError"


def test_another_model_is_refused(msa, tmp_path: Path) -> None:
    other = tmp_path / "other-model"
    make_llama(seed=1).save_pretrained(other)
    make_tokenizer().save_pretrained(other)
    result = msa("init", "--model", str(other), code=1)
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: space") and "different fingerprint" in last


def test_doctor(msa, tmp_path: Path) -> None:
    checks = {c["name"]: c for c in msa.json("doctor")}
    assert {"python", "torch", "transformers", "zarr", "sqlalchemy", "device"} <= set(checks)
    assert checks["memories"]["value"].startswith("0 in") and checks["array route_k"]["ok"]
    assert "array pooled_v" in msa("doctor").stdout
    result = CliRunner().invoke(app, ["doctor", "--path", str(tmp_path / "none")])
    assert result.exit_code == 1 and "msa init" in result.stdout


def test_demo_runs_on_any_model(monkeypatch: pytest.MonkeyPatch, model_dir: Path) -> None:
    from msa_agent.memory import Memory

    real_open = Memory.open.__func__
    monkeypatch.setattr(Memory, "open", classmethod(
        lambda cls, path, model=None, **kw: real_open(cls, path, str(model_dir), **kw)))
    result = CliRunner().invoke(app, ["demo", "-k", "1"])
    assert result.exit_code == 0, result.output
    assert "remembered 8 memories" in result.stdout and "recall:" in result.stdout


def test_default_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_path() == tmp_path / "msa-agent" / "default"
    assert space_path(None) == default_path() and space_path(Path("x")) == Path("x")
    monkeypatch.setenv("MSA_PATH", str(tmp_path / "env-space"))
    result = CliRunner().invoke(app, ["doctor", "--json"])
    assert str(tmp_path / "env-space") in result.stdout


def test_compact_reclaims_disk(msa, tmp_path: Path) -> None:
    """`msa forget --compact` and `msa compact` report bytes before/after; disk shrinks."""
    big = tmp_path / "big"
    big.mkdir()
    for i in range(6):
        (big / f"n{i}.md").write_text(" ".join(f"word{i}x{j}" for j in range(600)))
    msa("ingest", str(big))
    full = msa.json("stats")["bytes_on_disk"]
    out = msa.json("forget", "--where", "kind=document", "--yes", "--compact")
    assert out["deleted"] >= 6 and out["bytes_after"] < full
    again = msa.json("compact")
    assert again["bytes_after"] <= again["bytes_before"]
