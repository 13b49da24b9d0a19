"""Helpers shared by the store tests: tiny arrays so everything runs fast."""

from __future__ import annotations

import numpy as np

from msa_agent.store import ArraySpec, NewMemory

ROW = (2, 3, 4)
SPECS = [
    ArraySpec("route_k", "chunk", ROW, rows_per_chunk=4),
    ArraySpec("pooled_v", "chunk", ROW, dtype="float32", rows_per_chunk=4),
    ArraySpec("full_k", "token", ROW, rows_per_chunk=16),
]
FP = {"model": "tiny", "layers": [1, 2], "pool": 64}


def make_data(m: NewMemory, seed: int) -> dict[str, np.ndarray]:
    """Distinct, non-zero rows for every array of ``SPECS``."""
    rng = np.random.default_rng(seed)
    out = {}
    for s in SPECS:
        n = m.n_chunks if s.unit == "chunk" else m.n_tokens
        out[s.name] = (rng.standard_normal((n, *ROW)) + 3.0).astype(s.dtype)
    return out


def mem(i: int, **kw: object) -> NewMemory:
    """A small memory; ``n_chunks``/``n_tokens`` vary with ``i``."""
    kw.setdefault("n_chunks", i % 3 + 1)
    kw.setdefault("n_tokens", (i % 3) * 7 + 3)
    return NewMemory(text=f"memory {i}", **kw)  # type: ignore[arg-type]


