"""Helpers of the bundle and crash tests: a tiny space (no model) and the import loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from msa_agent.runtime import bundle
from msa_agent.store import ArraySpec, NewMemory, Space

SPECS = [ArraySpec("route_k", "chunk", (2, 3), rows_per_chunk=4),
         ArraySpec("full_k", "token", (3,), dtype="float32", rows_per_chunk=16)]
FP = {"model": "tiny"}


def rows_for(m: NewMemory, seed: int) -> dict[str, np.ndarray]:
    """Random finite rows of every array of ``SPECS`` for ``m``."""
    rng = np.random.default_rng(seed)
    return {s.name: rng.standard_normal((m.n_chunks if s.unit == "chunk" else m.n_tokens,
                                         *s.row_shape)).astype(s.dtype) for s in SPECS}


def make_space(path: Path, n: int = 5, namespaces: tuple[str, ...] = ("a", "b"),
               durable: bool = False) -> Space:
    """A new space at ``path`` holding ``n`` memories spread over ``namespaces``."""
    space = Space.create(path, FP, SPECS, durable=durable)
    mems = [NewMemory(text=f"memory {i} marker{i}", namespace=namespaces[i % len(namespaces)],
                      metadata={"i": i}, n_chunks=i % 3 + 1, n_tokens=i % 4 + 2)
            for i in range(n)]
    space.add(mems, [rows_for(m, i) for i, m in enumerate(mems)])
    return space


def import_into(space: Space, src: Path, namespace: str | None = None,
                report: bool = False) -> int:
    """What ``Engine.import_bundle`` does, minus the model: returns memories added. The first
    write (a setting, as the engine's pooled_k) happens only once the bundle is checked.
    ``report`` prints ``batch N`` after each committed batch (for the crash harness)."""
    manifest = bundle.read_manifest(src)
    bundle.check_compatible(manifest, space)
    done = 0
    with bundle.memory_batches(src, manifest, space.path, namespace) as batches:
        space.set_setting("touched", True)
        for memories, rows in batches:
            present = {m.id for m in space.get_many([m.id or "" for m in memories])}
            keep = [i for i, m in enumerate(memories) if m.id not in present]
            done += len(space.add([memories[i] for i in keep], [rows[i] for i in keep]))
            if report:
                print("batch", done, flush=True)
    return done
