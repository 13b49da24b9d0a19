"""Forgetting erases on disk (issue 16, item 8): after ``forget`` (and again after
``compact``) a forgotten memory's unique words are in no file of the space (SQLite database,
WAL, FTS5 index, zarr chunks) and its rows are in no array."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from msa_agent import Memory
from msa_agent.store import Space

pytestmark = pytest.mark.filterwarnings("ignore::msa_agent.runtime.engine.RoutingQualityWarning")

MARKER = "zqxmarker7731"
META_MARKER = "qpwmeta5520"
KEEP = ["Paris is the capital of France and sits on the Seine.",
        "Bob likes green tea and quick brown foxes in the morning."]


def files_holding(path: Path, needle: str) -> list[str]:
    """Every file under ``path`` whose bytes hold ``needle`` (UTF-8 or UTF-16)."""
    forms = [needle.encode(), needle.encode("utf-16-le")]
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")
                  if p.is_file() and any(f in p.read_bytes() for f in forms))


def all_rows(path: Path) -> dict[str, np.ndarray]:
    """Every committed row of every array, decompressed, as bytes per row."""
    with Space.open(path, read_only=True) as s:
        return {name: s._store.read(name, 0, s._ends[spec.unit])
                for name, spec in s.arrays.items()}


def rows_of(path: Path, id: str) -> dict[str, np.ndarray]:
    with Space.open(path, read_only=True) as s:
        m = s.get(id)
        assert m is not None
        return {name: s.read(name, [m])[0] for name in s.arrays}


def assert_rows_gone(path: Path, gone: dict[str, np.ndarray]) -> None:
    for name, rows in all_rows(path).items():
        have = {r.tobytes() for r in rows.reshape(len(rows), -1)}
        lost = gone[name].reshape(len(gone[name]), -1)
        assert not any(r.any() and r.tobytes() in have for r in lost), name


def test_forgotten_text_and_rows_leave_every_file(tmp_path: Path, tiny_pair) -> None:
    path = tmp_path / "m"
    with Memory.open(path, model=tiny_pair, chunk_size=8, compact_dead_fraction=None) as mem:
        mem.remember_many(KEEP)
        secret = mem.remember(f"The vault code word is {MARKER} and nobody knows it.",
                              metadata={"tag": META_MARKER})
        mem.remember_many([f"filler note {i} about the weather" for i in range(6)])
        assert files_holding(path, MARKER), "the probe must see the marker before forget"
        gone = rows_of(path, secret)
        mem.forget(secret)
        assert files_holding(path, MARKER) == []  # already at forget: secure_delete + WAL
        assert files_holding(path, META_MARKER) == []
        assert_rows_gone(path, gone)  # zeroed in place
        mem.compact()
        assert files_holding(path, MARKER) == files_holding(path, META_MARKER) == []
        assert_rows_gone(path, gone)
        assert {h.text for h in mem.recall("capital of France", k=3)} >= {KEEP[0]}
    assert files_holding(path, MARKER) == []  # and after close (WAL folded, nothing reappears)
