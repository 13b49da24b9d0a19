"""Compaction: copy live rows, packed and in order, into a fresh arrays folder, then switch.

The FTS index is keyed by row, not by array offset, so it needs no relocation; it is merged
into one segment afterwards (``optimize``), which drops any entry of a deleted memory.

Crash-safe: the switch (every memory's new offsets, the ends and the folder name) is one SQL
transaction; whichever folder lost is removed at the next open (``remove_stray_dirs``).
"""

from __future__ import annotations

from typing import Any

from .arrays import ArrayStore
from .meta import MetaStore
from .roots import FsspecRoot, LocalRoot
from .types import StoredMemory, Unit

COPY_ROWS = 4096  # at most this many rows per slice copy


def compact_arrays(root: LocalRoot | FsspecRoot, meta: MetaStore, old: ArrayStore, old_dir: str,
                   durable: bool) -> tuple[ArrayStore, str, dict[str, int]]:
    """Rewrite ``old`` without dead rows; returns the new store, folder name and ends."""
    live = meta.live()
    new_dir = next_arrays_dir(old_dir)
    root.remove(new_dir)  # a leftover of an earlier crash (remove_stray_dirs runs at open)
    new = ArrayStore.create(root, new_dir, list(old.specs.values()))
    moves, ends = relocations(live)
    for name, spec in old.specs.items():
        _copy_live(old, new, name, spec.unit, live, moves)
        if durable and ends[spec.unit]:
            new.fsync(name, 0, ends[spec.unit])
    if durable:
        new.fsync_group()
    meta.relocate(moves, (ends["chunk"], ends["token"]), new_dir)
    meta.optimize_lexical()  # no tombstoned words of forgotten memories survive in the index
    root.remove(old_dir)
    return new, new_dir, ends


def remove_stray_dirs(root: LocalRoot | FsspecRoot, active: str) -> None:
    """Delete array folders left by a compaction that crashed (either side of its commit)."""
    for name in root.array_dirs():
        if name != active:
            root.remove(name)


def next_arrays_dir(current: str) -> str:
    n = 0 if current == "arrays.zarr" else int(current.split(".")[1])
    return f"arrays.{n + 1}.zarr"


def relocations(live: list[StoredMemory]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """New packed offsets for ``live`` (kept in order) and the new committed ends."""
    moves, chunk, token = [], 0, 0
    for m in live:
        moves.append({"id": m.id, "chunk_start": chunk, "token_start": token})
        chunk, token = chunk + m.n_chunks, token + m.n_tokens
    return moves, {"chunk": chunk, "token": token}


def _copy_live(old: ArrayStore, new: ArrayStore, name: str, unit: Unit,
               live: list[StoredMemory], moves: list[dict[str, Any]]) -> None:
    key = "chunk_start" if unit == "chunk" else "token_start"
    pairs = [(m.rows(unit), mv[key]) for m, mv in zip(live, moves, strict=True)]
    for (a, b), dst in _runs(pairs):
        for off in range(0, b - a, COPY_ROWS):
            stop = min(b, a + off + COPY_ROWS)
            new.write(name, dst + off, old.read(name, a + off, stop))


def _runs(pairs: list[tuple[tuple[int, int], int]]) -> list[tuple[tuple[int, int], int]]:
    """Merge ``((src_start, src_stop), dst_start)`` pairs that are contiguous on both sides."""
    out: list[tuple[tuple[int, int], int]] = []
    for (a, b), dst in pairs:
        if b <= a:
            continue
        if out and out[-1][0][1] == a and out[-1][1] + (out[-1][0][1] - out[-1][0][0]) == dst:
            out[-1] = ((out[-1][0][0], b), out[-1][1])
        else:
            out.append(((a, b), dst))
    return out
