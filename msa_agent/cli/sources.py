"""What ``msa ingest`` reads: files, folders, ``.jsonl`` chat sessions and stdin.

Each source becomes one memory item (a dict of ``Memory.remember`` arguments) or a
``Skipped`` with a readable reason; nothing here raises for one bad file.
"""

from __future__ import annotations

import codecs
import fnmatch
import io
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_INCLUDE = ("*.md", "*.markdown", "*.txt", "*.rst", "*.jsonl", "*.pdf")
STDIN = "-"
_SNIFF = 8192


@dataclass(frozen=True)
class Skipped:
    """A source that was not ingested, and why."""

    source: str
    reason: str


def collect(paths: Sequence[str], include: Sequence[str] | None,
            exclude: Sequence[str] | None) -> tuple[list[str], list[Skipped]]:
    """Expand folders recursively (filtered by globs); files named explicitly are always kept.

    Hidden files and folders (a name starting with ``.``) are skipped inside folders.
    """
    found: list[str] = []
    missing: list[Skipped] = []
    for raw in paths:
        p = Path(raw)
        if raw == STDIN or p.is_file():
            found.append(raw)
        elif p.is_dir():
            found += [str(f) for f in _walk(p, include or DEFAULT_INCLUDE, exclude or ())]
        else:
            missing.append(Skipped(raw, "no such file or folder"))
    return list(dict.fromkeys(found)), missing


def _walk(root: Path, include: Sequence[str], exclude: Sequence[str]) -> Iterator[Path]:
    for f in sorted(root.rglob("*")):
        rel = f.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not f.is_file():
            continue
        if _matches(rel, include) and not _matches(rel, exclude):
            yield f


def _matches(rel: Path, globs: Sequence[str]) -> bool:
    posix = rel.as_posix()
    return any(fnmatch.fnmatch(posix, g) or fnmatch.fnmatch(rel.name, g) for g in globs)


def read_item(source: str, kind: str | None, metadata: dict[str, Any],
              encoding: str = "utf-8") -> dict[str, Any] | Skipped:
    """One memory item for ``source`` (a path or ``-``), or why it was skipped.

    Files are decoded with ``encoding``; ``.pdf`` files give their text layer (pypdf).
    """
    try:
        text = sys.stdin.read() if source == STDIN else _read_text(Path(source), encoding)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return Skipped(source, _reason(e, encoding))
    meta = {"source": "stdin" if source == STDIN else source, **metadata}
    if source != STDIN and source.endswith(".jsonl"):
        return _session_item(source, text, kind, meta)
    if not text.strip():
        return Skipped(source, "empty")
    return {"text": text, "kind": kind or "document", "metadata": meta}


def _read_text(path: Path, encoding: str) -> str:
    data = path.read_bytes()
    if path.suffix.lower() == ".pdf" or data.startswith(b"%PDF-"):
        return pdf_text(data)
    if b"\x00" in data[:_SNIFF]:
        raise ValueError("binary file")
    return data.decode(encoding)


def pdf_text(data: bytes) -> str:
    """The text layer of a PDF, pages separated by blank lines (a scan without one is empty)."""
    try:
        from pypdf import PdfReader
    except ImportError:
        raise ValueError("PDF text needs pypdf: pip install 'msa-agent[pdf]'") from None
    try:
        reader = PdfReader(io.BytesIO(data))
        return "\n\n".join((page.extract_text() or "").strip() for page in reader.pages)
    except Exception as e:  # noqa: BLE001 - pypdf raises many types on a malformed file
        raise ValueError(f"unreadable PDF ({type(e).__name__}: {e})") from None


def _reason(e: Exception, encoding: str = "utf-8") -> str:
    if isinstance(e, UnicodeDecodeError):
        if codecs.lookup(encoding).name == "utf-8":
            return f"not UTF-8 text (byte {e.start}); pass --encoding (e.g. latin-1)"
        return f"not {encoding} text (byte {e.start})"
    if isinstance(e, OSError):
        return e.strerror or type(e).__name__
    return str(e)


def _session_item(source: str, text: str, kind: str | None,
                  meta: dict[str, Any]) -> dict[str, Any] | Skipped:
    """A chat log, one ``{"role", "content"}`` object per line, as one session memory."""
    lines, session_id = [], None
    for n, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            msg = json.loads(raw)
            role, content = msg["role"], msg.get("content", msg.get("text"))
        except (json.JSONDecodeError, KeyError, TypeError):
            return Skipped(source, f"line {n} is not a chat message with role and content")
        session_id = session_id or msg.get("session_id")
        lines.append(f"{role}: {_content_text(content)}")
    if not lines:
        return Skipped(source, "empty")
    return {"text": "\n".join(lines), "kind": kind or "session",
            "session_id": str(session_id or Path(source).stem),
            "metadata": {**meta, "messages": len(lines)}}


def _content_text(content: Any) -> str:
    """Message content as text (content-part lists keep their text parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return json.dumps(content, ensure_ascii=False)
