"""Zarr v3 side of a space: one array per ``ArraySpec``, shape ``(capacity, *row_shape)``.

Rows are addressed by ``[start, stop)`` ranges that the SQL side allocates; this module knows
nothing of memories. Reads and writes are contiguous slices (no per-chunk Python loops).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from .errors import StoreCorruptedError, StoreError
from .roots import FsspecRoot, LocalRoot
from .types import ArraySpec

MIN_GROWTH_CHUNKS = 16  # capacity grows by >= 16 zarr chunks (and >= 1.5x) at a time
GROWTH_FACTOR = 1.5


def compressors_for(spec: ArraySpec) -> list[BloscCodec]:
    """Blosc + byte shuffle with ``spec.codec`` (default lz4: near-memcpy decode, and
    zeroed rows of deleted memories compress away); [] for "none". See docs/store.md."""
    if spec.codec == "none":
        return []
    level = 5 if spec.codec == "lz4" else 1
    return [BloscCodec(typesize=np.dtype(spec.dtype).itemsize, cname=spec.codec,
                       clevel=level, shuffle="shuffle")]


@contextmanager
def zarr_errors(what: str) -> Iterator[None]:
    """Turn any zarr/filesystem/codec failure into ``StoreCorruptedError``.

    Only wraps calls into zarr; input validation happens before, outside this context.
    """
    try:
        yield
    except StoreError:
        raise
    except OSError as e:  # disk full, permissions...: an I/O failure, not corruption
        raise StoreError(f"{what}: I/O error: {e}") from None
    except Exception as e:
        raise StoreCorruptedError(f"{what}: array store error: {type(e).__name__}: {e}") from None


class ArrayStore:
    """The arrays of one space inside a zarr v3 group folder ``sub`` of ``root`` (a local
    folder or an fsspec URL, store/roots.py)."""

    def __init__(self, root: LocalRoot | FsspecRoot, sub: str, group: zarr.Group,
                 specs: Sequence[ArraySpec]) -> None:
        self.root, self.sub = root, sub
        self.group = group
        self.specs = {s.name: s for s in specs}
        self.arrays: dict[str, zarr.Array] = {}

    @property
    def path(self) -> Path:
        """The group folder of a local store."""
        assert isinstance(self.root, LocalRoot), "a remote array store has no local path"
        return self.root.path / self.sub

    @classmethod
    def create(cls, root: LocalRoot | FsspecRoot | Path, sub: str,
               specs: Sequence[ArraySpec]) -> ArrayStore:
        """Create the group and one empty (capacity 0) array per spec."""
        root = LocalRoot(root) if isinstance(root, Path) else root
        with zarr_errors("create arrays"):
            group = zarr.open_group(store=root.zarr_store(sub, False), mode="w-", zarr_format=3)
            store = cls(root, sub, group, specs)
            for s in specs:
                store.arrays[s.name] = group.create_array(
                    s.name, shape=(0, *s.row_shape), dtype=s.dtype,
                    chunks=(s.chunk_rows, *s.row_shape), compressors=compressors_for(s),
                    fill_value=0)
            return store

    @classmethod
    def open(cls, root: LocalRoot | FsspecRoot | Path, sub: str, specs: Sequence[ArraySpec],
             ends: dict[str, int], read_only: bool = False) -> ArrayStore:
        """Open and check every array: present, right row shape/dtype, capacity >= end."""
        root = LocalRoot(root) if isinstance(root, Path) else root
        if not root.is_file(f"{sub}/zarr.json"):
            raise StoreCorruptedError(
                f"zarr group metadata missing: {root.describe(sub + '/zarr.json')}")
        with zarr_errors("open arrays"):
            group = zarr.open_group(store=root.zarr_store(sub, read_only),
                                    mode="r" if read_only else "r+", zarr_format=3)
            store = cls(root, sub, group, specs)
            for s in specs:
                store.arrays[s.name] = store._open_one(s, ends[s.unit])
            return store

    def _open_one(self, spec: ArraySpec, end: int) -> zarr.Array:
        if not self.root.is_file(f"{self.sub}/{spec.name}/zarr.json"):
            raise StoreCorruptedError(f"array {spec.name!r}: zarr metadata missing")
        arr = self.group[spec.name]
        if not isinstance(arr, zarr.Array):
            raise StoreCorruptedError(f"{spec.name!r} is not a zarr array")
        if tuple(arr.shape[1:]) != spec.row_shape or arr.dtype != np.dtype(spec.dtype):
            raise StoreCorruptedError(
                f"array {spec.name!r}: on disk {arr.shape[1:]}/{arr.dtype}, "
                f"expected {spec.row_shape}/{spec.dtype}")
        if arr.shape[0] < end:
            raise StoreCorruptedError(
                f"array {spec.name!r}: capacity {arr.shape[0]} < committed rows {end}")
        return arr

    # -- writes ------------------------------------------------------------------------------
    def ensure_capacity(self, name: str, needed: int) -> None:
        """Grow axis 0 to hold ``needed`` rows, in big steps (metadata-only resize)."""
        arr, spec = self.arrays[name], self.specs[name]
        cap = arr.shape[0]
        if needed <= cap:
            return
        step = spec.chunk_rows
        new = max(needed, int(cap * GROWTH_FACTOR), cap + MIN_GROWTH_CHUNKS * step)
        new = -(-new // step) * step
        with zarr_errors(f"resize {name}"):
            arr.resize((new, *spec.row_shape))

    def write(self, name: str, start: int, rows: np.ndarray) -> None:
        """Write ``rows`` at ``[start, start+len(rows))`` in one sliced assignment."""
        if len(rows) == 0:
            return
        self.ensure_capacity(name, start + len(rows))
        with zarr_errors(f"write {name}"):
            self.arrays[name][start:start + len(rows)] = rows

    def zero(self, name: str, ranges: Sequence[tuple[int, int]]) -> None:
        """Overwrite each ``[start, stop)`` with zeros (all-zero chunks are removed)."""
        spec, cap = self.specs[name], self.arrays[name].shape[0]
        for start, stop in merge_ranges(ranges, gap=0):
            stop = min(stop, cap)
            if stop > start:
                zeros = np.zeros((stop - start, *spec.row_shape), dtype=spec.dtype)
                with zarr_errors(f"wipe {name}"):
                    self.arrays[name][start:stop] = zeros

    def fsync(self, name: str, start: int, stop: int) -> None:
        """fsync the chunk files covering ``[start, stop)`` plus array metadata and dirs
        (nothing on an object store: a PUT that returned is durable)."""
        if not self.root.local:
            return
        step = self.specs[name].chunk_rows
        base = self.path / name
        tail = "/".join("0" for _ in self.specs[name].row_shape)
        files = [base / "c" / f"{i}/{tail}" for i in range(start // step, (stop - 1) // step + 1)]
        dirs = {base, base / "c"} | {p for f in files for p in f.parents if base in p.parents}
        for f in [*files, base / "zarr.json", *dirs]:
            _fsync_path(f)

    def fsync_group(self) -> None:
        """fsync the group metadata, every array's metadata, the group folder and its parent."""
        if not self.root.local:
            return
        for name in self.specs:
            _fsync_path(self.path / name / "zarr.json")
            _fsync_path(self.path / name)
        for p in (self.path / "zarr.json", self.path, self.path.parent):
            _fsync_path(p)

    # -- reads -------------------------------------------------------------------------------
    def read(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` as one contiguous slice read."""
        spec = self.specs[name]
        if stop <= start:
            return np.zeros((0, *spec.row_shape), dtype=spec.dtype)
        with zarr_errors(f"read {name}"):
            if stop > self.arrays[name].shape[0]:  # a reader's view; the writer grew it since
                self.arrays[name] = self._open_one(spec, stop)
            return np.asarray(self.arrays[name][start:stop])

    def nbytes_on_disk(self, name: str) -> int:
        return self.root.size(f"{self.sub}/{name}")


def _fsync_path(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:  # all-zero chunks are never written
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def merge_ranges(ranges: Sequence[tuple[int, int]], gap: int) -> list[tuple[int, int]]:
    """Sort and merge ``[start, stop)`` ranges whose distance is ``<= gap`` rows."""
    out: list[list[int]] = []
    for start, stop in sorted(r for r in ranges if r[1] > r[0]):
        if out and start - out[-1][1] <= gap:
            out[-1][1] = max(out[-1][1], stop)
        else:
            out.append([start, stop])
    return [(a, b) for a, b in out]


def gather(block: np.ndarray, block_start: int, ranges: Sequence[tuple[int, int]]) -> Any:
    """Row indices into ``block`` of the concatenated ``ranges`` (vectorised, no loop)."""
    starts = np.fromiter((r[0] for r in ranges), dtype=np.int64, count=len(ranges))
    lens = np.fromiter((r[1] - r[0] for r in ranges), dtype=np.int64, count=len(ranges))
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(starts - block_start - np.cumsum(lens) + lens, lens)
    return offsets + np.arange(total, dtype=np.int64)
