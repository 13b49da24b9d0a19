"""Helpers of the lexical-index tests: raw looks at the FTS tables and zero-row memories."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from store_helpers import SPECS

from msa_agent.store import NewMemory, Space
from msa_agent.store.lexical import FTS_TABLE


def no_rows() -> dict[str, np.ndarray]:
    """Arrays for a memory with no chunks and no tokens (fast: nothing reaches zarr)."""
    return {s.name: np.zeros((0, *s.row_shape), dtype=s.dtype) for s in SPECS}


def add_texts(space: Space, texts: Sequence[str], **kw: object) -> list[str]:
    """Add one zero-row memory per text; ``kw`` goes to every ``NewMemory``."""
    mems = [NewMemory(text=t, **kw) for t in texts]  # type: ignore[arg-type]
    return space.add(mems, [no_rows() for _ in mems])


def assert_fts_consistent(path: Path) -> None:
    """The FTS index holds exactly the committed memory rows, with their current text.

    ``integrity-check`` with rank 1 compares the index against the external content table;
    the docsize rowids must equal the memory rowids (no stale or missing entries).
    """
    con = sqlite3.connect(path / "meta.sqlite")
    try:
        con.execute(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rank) VALUES ('integrity-check', 1)")
        indexed = {r for (r,) in con.execute(f"SELECT id FROM {FTS_TABLE}_docsize")}
        rows = {r for (r,) in con.execute("SELECT rowid FROM memories")}
    finally:
        con.close()
    assert indexed == rows


def db_bytes(path: Path) -> bytes:
    """Every byte of the space's sqlite files (database, WAL, shared memory)."""
    return b"".join(f.read_bytes() for f in sorted(path.glob("meta.sqlite*")))
