"""What ``msa ingest`` reads: globs, hidden files, chat logs, KEY=VALUE pairs."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from msa_agent.cli.common import parse_pairs
from msa_agent.cli.sources import Skipped, collect, read_item


def test_collect_filters_folders_but_keeps_named_files(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / ".git").mkdir()
    for name in ["a/x.md", "a/y.txt", "a/z.py", ".git/h.md", "a/.secret.md"]:
        (tmp_path / name).write_text("text")
    found, missing = collect([str(tmp_path), str(tmp_path / "a" / "z.py"), "nope"], None, None)
    assert sorted(Path(f).name for f in found) == ["x.md", "y.txt", "z.py"]
    assert missing == [Skipped("nope", "no such file or folder")]
    found, _ = collect([str(tmp_path)], ["*.py", "*.md"], ["a/x*"])
    assert [Path(f).name for f in found] == ["z.py"]


def test_chat_session_ids_from_field_or_file_name(tmp_path: Path) -> None:
    log = tmp_path / "monday.jsonl"
    log.write_text('{"role": "user", "content": "hi"}\n\n'
                   '{"role": "assistant", "content": [{"type": "text", "text": "hello"}]}\n')
    item = read_item(str(log), None, {"team": "a"})
    assert item["session_id"] == "monday" and item["kind"] == "session"
    assert item["text"] == "user: hi\nassistant: hello" and item["metadata"]["team"] == "a"
    log.write_text('{"role": "user", "text": "hi", "session_id": "s-42"}\n')
    assert read_item(str(log), "chat", {})["session_id"] == "s-42"
    log.write_text('{"content": "no role"}\n')
    assert isinstance(read_item(str(log), None, {}), Skipped)


def test_empty_and_unreadable_files_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "empty.md").write_text("  \n")
    assert read_item(str(tmp_path / "empty.md"), None, {}) == \
        Skipped(str(tmp_path / "empty.md"), "empty")
    (tmp_path / "locked.md").write_text("secret")
    (tmp_path / "locked.md").chmod(0)
    item = read_item(str(tmp_path / "locked.md"), None, {})
    (tmp_path / "locked.md").chmod(0o644)
    assert isinstance(item, Skipped) or item["text"] == "secret"  # root may read anything


def test_parse_pairs() -> None:
    assert parse_pairs(["a=b", "n:=3", "a=c", "t=x=y"], "--where") == \
        {"a": ["b", "c"], "n": 3, "t": "x=y"}
    assert parse_pairs(None, "--where") == {}
    for bad in (["novalue"], ["=v"], ["n:=not json"]):
        with pytest.raises(typer.BadParameter):
            parse_pairs(bad, "--where")
