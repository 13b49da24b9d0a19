"""Everyday use of `msa` on a tiny model: where memories came from, ask's limit and timings,
other encodings and PDFs, per-file progress, and no empty space left by a failed command."""
# ruff: noqa: F811 - pytest fixtures imported from cli_fixtures are parameters here

from __future__ import annotations

import importlib
import itertools
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from cli_fixtures import Msa, docs, model_dir, msa  # noqa: F401
from typer.testing import CliRunner

from msa_agent.cli import app
from msa_agent.cli.sources import pdf_text, read_item

ingest = importlib.import_module("msa_agent.cli.ingest")  # the package exports the command


def make_pdf(text: str) -> bytes:
    """A one-page PDF whose text layer is ``text`` (Helvetica, uncompressed)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for n, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return bytes(out)


def test_tables_show_the_source(msa, docs: Path) -> None:
    msa("ingest", str(docs))
    msa("ingest", "-", input="standup moved to 10:00 [bold]not markup[/]")
    stdin_id = next(r["id"] for r in msa.json("ls") if r["metadata"]["source"] == "stdin")
    assert "[bold]not markup[/]" in msa("show", stdin_id).stdout  # text is not rich markup
    listed = msa("ls").stdout
    assert "source" in listed and "paris.md" in listed and "stdin" in listed
    recalled = msa("recall", "capital of France", "-k", "4").stdout
    assert "source" in recalled and "paris.md" in recalled
    asked = msa("ask", "capital of France?", "-k", "2", "--max-tokens", "2").stdout
    assert "source" in asked


def test_ask_says_when_it_stopped_at_the_limit_and_times_readably(msa, docs: Path) -> None:
    msa("ingest", str(docs))
    # one token: an extractive answer (the default format) always copies at least one, but
    # may end its span before a larger limit
    out = msa("ask", "capital of France?", "-k", "1", "--max-tokens", "1", "--no-stream").stdout
    assert "stopped at the 1-token limit" in out and "--max-tokens" in out
    timing = next(line for line in out.splitlines() if "total" in line)
    assert "route " in timing and "generate " in timing and " ms" in timing
    assert "tok/s" in timing and "{" not in timing  # a line, not a raw dict
    ans = msa.json("ask", "capital of France?", "-k", "1", "--max-tokens", "1")
    assert ans["generated_tokens"] == 1 and ans["stopped_at_limit"] is True


def test_ingest_rerun_adds_nothing_and_updates_changed_files(msa, docs: Path) -> None:
    first = msa.json("ingest", str(docs))
    ids = {i["source"]: i["id"] for i in first["ingested"]}
    assert {i["status"] for i in first["ingested"]} == {"added"}
    stats = msa.json("stats")
    again = msa.json("ingest", str(docs))
    assert {i["source"]: i["id"] for i in again["ingested"]} == ids
    assert {i["status"] for i in again["ingested"]} == {"unchanged"}
    assert msa.json("stats") == stats  # nothing added, nothing rewritten
    (docs / "paris.md").write_text("Paris is the capital of France. Lyon is not.")
    (docs / "new.md").write_text("A new note.")
    out = msa("ingest", str(docs)).stdout
    assert "ingested 4 source(s), skipped 0 (1 new, 1 updated, 2 unchanged" in out
    rows = msa.json("ls")
    assert len(rows) == 4
    paris = next(r for r in rows if r["metadata"]["source"].endswith("paris.md"))
    assert paris["id"] == ids[str(docs / "paris.md")] and "Lyon" in paris["text"]
    msa("ingest", "-", input="Bob likes green tea.")  # the text of tea.txt: not stored twice
    assert len(msa.json("ls")) == 4


def test_forget_of_a_later_part_forgets_the_whole_text(msa, tmp_path: Path) -> None:
    f = tmp_path / "long.md"
    f.write_text("Alice works for Acme in Lisbon and likes green tea. " * 60)
    msa("ingest", str(f))
    rows = msa.json("ls", "--limit", "1000")
    assert len(rows) >= 3
    later = next(r["id"] for r in rows if r["part"] == 2)
    assert "other" in msa("forget", later, input="n\n", code=1).stderr  # the prompt says so
    assert msa.json("forget", later, "--yes") == {"deleted": len(rows)}
    assert msa.json("ls") == []


def test_latin1_needs_encoding_and_then_ingests(msa, tmp_path: Path) -> None:
    f = tmp_path / "menu.txt"
    f.write_bytes("Café crème à Paris, 3 €".encode("latin-1", errors="replace"))
    refused = msa("ingest", str(f), code=1)
    assert "not UTF-8 text" in refused.stderr and "--encoding" in refused.stderr
    assert msa.json("ingest", str(f), "--encoding", "latin-1")["ingested"]
    assert msa.json("ls")[0]["text"].startswith("Café crème à Paris")


def test_pdf_text_is_ingested(msa, tmp_path: Path) -> None:
    folder = tmp_path / "papers"
    folder.mkdir()
    (folder / "paper.pdf").write_bytes(make_pdf("Paris is the capital of France."))
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 this is not a pdf")
    result = msa("ingest", str(folder), "--json")
    out = json.loads(result.stdout)
    assert [Path(i["source"]).name for i in out["ingested"]] == ["paper.pdf"]
    assert out["skipped"][0]["reason"].startswith("unreadable PDF")
    assert msa.json("ls")[0]["text"] == "Paris is the capital of France."


def test_read_item_pdf_and_encoding(tmp_path: Path) -> None:
    assert pdf_text(make_pdf("hello pdf")) == "hello pdf"
    f = tmp_path / "a.txt"
    f.write_bytes("naïve".encode("latin-1"))
    assert read_item(str(f), None, {}, "latin-1")["text"] == "naïve"
    assert "pass --encoding" in read_item(str(f), None, {}).reason


def test_failed_ingest_leaves_no_space(tmp_path: Path, model_dir: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.txt").write_bytes(b"\xff\xfe not utf-8")
    empty = tmp_path / "empty-dir"
    empty.mkdir()
    for target in (tmp_path / "new-space", empty):
        result = CliRunner().invoke(app, ["ingest", str(folder), "--model", str(model_dir),
                                          "--path", str(target)])
        assert result.exit_code == 1 and "not UTF-8" in result.stderr, result.output
    assert not (tmp_path / "new-space").exists() and list(empty.iterdir()) == []


def test_failed_import_leaves_no_space(msa, tmp_path: Path) -> None:
    msa("ingest", "-", input="hello")
    msa("export", str(tmp_path / "b"))
    (tmp_path / "b" / "memories.jsonl").write_text("{}\n")  # manifest fine, content not
    fresh = Msa(tmp_path / "fresh")
    fresh("import", str(tmp_path / "b"), code=2)
    assert not (tmp_path / "fresh").exists()
    msa("import", str(tmp_path / "b"), code=2)  # an existing space is never removed
    assert msa.json("stats")["memories"] == 1


class _FakeMemory:
    """``remember_many`` and ``stats`` only: 10 tokens per item."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def remember_many(self, items: list, dedupe: bool = False) -> list[str]:
        self.batches.append(len(items))
        return [f"id{sum(self.batches)}-{i}" for i in range(len(items))]

    def history(self, id: str) -> list:
        return []

    def stats(self) -> SimpleNamespace:
        return SimpleNamespace(tokens=10 * sum(self.batches))


@pytest.mark.parametrize(("tick", "sizes"), [
    (0.01, [1, 2, 4, 8, 16, 32, 7]),  # fast batches grow up to BATCH_FILES
    (1.0, [1] * 70),  # slow ones stay one file each: the bar moves per file
])
def test_ingest_batches_are_paced_per_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                           tick: float, sizes: list[int]) -> None:
    clock = itertools.count(step=tick)
    monkeypatch.setattr(ingest.time, "perf_counter", lambda: next(clock))
    files = []
    for i in range(70):
        (tmp_path / f"n{i:02}.txt").write_text(f"note {i}")
        files.append(str(tmp_path / f"n{i:02}.txt"))
    mem = _FakeMemory()
    run = ingest.Run(mem, None, {}, "utf-8")  # type: ignore[arg-type]
    run.ingest_all(files)
    assert mem.batches == sizes and len(run.ids) == 70 and run.tokens == 700


def test_a_failed_open_removes_only_an_empty_space(msa, tmp_path: Path) -> None:
    from msa_agent.cli.common import _drop_failed_open

    other = tmp_path / "not-a-space"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    _drop_failed_open(other)  # not a space: left alone
    assert (other / "notes.txt").exists()
    msa("ingest", "-", input="keep me")
    _drop_failed_open(msa.space)  # holds a memory: kept
    assert msa.json("stats")["memories"] == 1
    msa("forget", "--where", "kind=document", "--yes")
    _drop_failed_open(msa.space)  # empty: removed
    assert not msa.space.exists()


def test_read_commands_work_beside_a_writer(msa, docs: Path, model_dir: Path) -> None:  # noqa: F811
    """ls, show, recall, stats and export open the space read-only: they work while a
    writer holds it (here a Memory open in this process), and see its commits."""
    import warnings

    from msa_agent import Memory

    msa("ingest", str(docs))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        writer = Memory.open(msa.space)
    with writer:
        mid = writer.remember("The boiler was serviced by Vrai Thorn on Monday.")
        rows = msa.json("ls")
        assert mid in {r["id"] for r in rows}
        assert msa.json("recall", "boiler serviced")[0]["id"] == mid
        assert msa.json("stats")["memories"] == len(rows)
        msa("show", mid)
        msa("export", str(msa.space.parent / "bundle"))
        msa("forget", mid, "--yes", code=1)  # a write still needs the writer's lock
