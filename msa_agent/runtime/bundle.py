"""Portable, versioned export/import of a memory space ("bundle").

A bundle is a folder (or the same folder zipped, when the path ends in ``.zip``)::

    manifest.json      {format, version, fingerprint, space_config, router_id, arrays, counts,
                        files, sha256}
    memories.jsonl     one memory per line: id, namespace, kind, text, metadata, ids, part,
                       created_at, n_tokens, n_chunks, expires_at (optional; in array
                       order)
    arrays/NAME.npy    every memory's rows of array NAME, concatenated in memories.jsonl order

Import checks the model fingerprint (a space of another model is refused), keeps ids and
creation times, skips ids the space already holds (so a re-run resumes), and re-encodes the
routing keys when the bundle was made with another router. Before anything is written, the
whole bundle is checked (bundle_check.py): every file's sha256 (required), sizes against
what the manifest implies (a zip bomb is refused before extraction), symlinks (refused),
every memory line, and every array (dtype, shape, row counts, no NaN/inf). Then each batch
is atomic; the whole import is not (a crash mid-way leaves the batches done so far, and a
re-run completes it). Temporary files live in scratch folders (store/scratch.py) that the
next open of the space, or the next export into the same folder, removes after a crash.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from msa_agent.errors import InvalidInputError
from msa_agent.runtime import bundle_check as check
from msa_agent.runtime.bundle_check import (
    FIELDS,
    FORMAT,
    MANIFEST_FILE,
    MEMORIES_FILE,
    VERSION,
    Manifest,
)
from msa_agent.store import (
    ArraySpec,
    FingerprintMismatchError,
    NewMemory,
    Space,
    StoreCorruptedError,
    StoredMemory,
)
from msa_agent.store.scratch import clean_stale, note, scratch_dir
from msa_agent.store.validate import fingerprint_diff

__all__ = ["FORMAT", "VERSION", "Manifest", "ExportReport", "ImportReport", "export_space",
           "read_manifest", "memory_batches", "check_compatible"]

BATCH = 256  # memories per read (export) and per atomic write (import)
Progress = Callable[[int], None]  # called with the number of memories just processed


@dataclass(frozen=True)
class ExportReport:
    """Result of an export: where the bundle is, how many memories and bytes it holds."""

    path: str
    memories: int
    bytes: int


@dataclass(frozen=True)
class ImportReport:
    """Result of an import: memories added, ids skipped because present, routing re-encoded."""

    imported: int
    skipped: int
    reencoded: bool


# ---------------------------------------------------------------------------------- export
def export_space(space: Space, router_id: str | None, dest: str | Path,
                 namespaces: Sequence[str] | None = None,
                 progress: Progress | None = None) -> ExportReport:
    """Write the memories of ``space`` in ``namespaces`` (None = every namespace) as a bundle
    at ``dest``.

    ``dest`` must not exist; a name ending in ``.zip`` gives a zip file, anything else a folder.
    The bundle is built in a scratch folder beside ``dest`` and appears there only complete.
    """
    dest = Path(dest)
    wanted = _namespace_list(namespaces)
    if dest.exists():
        raise InvalidInputError(f"{dest} already exists; choose a new bundle path")
    dest.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(dest.parent)  # what a killed export left here
    live = [m for m in space.live_chunks() if wanted is None or m.namespace in wanted]
    with scratch_dir(dest.parent, "export") as tmp, \
            note(None if space.read_only else space.workdir, tmp):
        folder = tmp / "bundle"
        _write_folder(space, router_id, live, folder, progress)
        if dest.suffix == ".zip":
            _zip(folder, tmp / "bundle.zip")
            _publish(tmp / "bundle.zip", dest)
        else:
            _publish(folder, dest)
    size = dest.stat().st_size if dest.is_file() else sum(
        p.stat().st_size for p in dest.rglob("*") if p.is_file())
    return ExportReport(str(dest), len(live), size)


def _namespace_list(namespaces: Sequence[str] | None) -> set[str] | None:
    if namespaces is None:
        return None
    if isinstance(namespaces, str) or not isinstance(namespaces, Sequence | set | frozenset) \
            or not all(isinstance(n, str) for n in namespaces):
        raise InvalidInputError("namespaces must be a list of namespace names (or None)")
    return set(namespaces)


def _publish(src: Path, dest: Path) -> None:
    """Move the finished bundle to ``dest``, never replacing something that appeared there."""
    try:
        if src.is_dir():
            os.rename(src, dest)  # fails if dest is a non-empty folder
        else:
            _link_or_rename(src, dest)
    except OSError as e:
        raise InvalidInputError(f"cannot write the bundle to {dest}: {e.strerror}") from None


def _link_or_rename(src: Path, dest: Path) -> None:
    """A hard link fails if ``dest`` exists (the scratch copy goes with its folder); where the
    file system has no hard links, a rename after checking ``dest`` is free."""
    try:
        os.link(src, dest)
    except FileExistsError:
        raise
    except OSError:
        if dest.exists():
            raise FileExistsError(17, "File exists", str(dest)) from None
        os.rename(src, dest)


def _write_folder(space: Space, router_id: str | None, live: list[StoredMemory], folder: Path,
                  progress: Progress | None) -> None:
    (folder / "arrays").mkdir(parents=True)
    with open(folder / MEMORIES_FILE, "w", encoding="utf-8") as f:
        for m in live:
            f.write(_memory_line(m))
    files = {name: f"arrays/{name}.npy" for name in space.arrays}
    outs = {name: _open_npy(folder / rel, space.arrays[name], live) for name, rel in files.items()}
    offsets = {"chunk": 0, "token": 0}
    for batch in _batches(live):
        for name, spec in space.arrays.items():
            rows = space.read(name, batch)
            _check_finite(name, batch, rows)
            start, n = offsets[spec.unit], sum(len(r) for r in rows)
            if n:
                outs[name][start:start + n] = np.concatenate(rows)
        _advance(offsets, batch)
        if progress:
            progress(len(batch))
    for out in outs.values():
        out.flush()
    del outs
    manifest = _manifest(space, router_id, live, files)
    manifest["sha256"] = {rel: check.sha256(folder / rel)
                          for rel in [MEMORIES_FILE, *files.values()]}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def _advance(offsets: dict[str, int], batch: Sequence[StoredMemory]) -> None:
    offsets["chunk"] += sum(m.n_chunks for m in batch)
    offsets["token"] += sum(m.n_tokens for m in batch)


def _open_npy(path: Path, spec: ArraySpec, live: list[StoredMemory]) -> np.ndarray:
    n = sum(m.n_chunks if spec.unit == "chunk" else m.n_tokens for m in live)
    return np.lib.format.open_memmap(path, mode="w+", dtype=spec.dtype,
                                     shape=(n, *spec.row_shape))


def _memory_line(m: StoredMemory) -> str:
    out = {k: getattr(m, k) for k in FIELDS}
    out["created_at"] = m.created_at.isoformat()
    if m.expires_at is not None:
        out["expires_at"] = m.expires_at.isoformat()
    line = json.dumps(out, ensure_ascii=False) + "\n"
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        raise StoreCorruptedError(
            f"memory {m.id} holds text or metadata that is not valid Unicode (stored before "
            "msa-agent checked it); forget it and remember it again, then export") from None
    return line


def _check_finite(name: str, batch: Sequence[StoredMemory], rows: list[np.ndarray]) -> None:
    bad = [m.id for m, r in zip(batch, rows) if r.dtype.kind == "f" and not np.isfinite(r).all()]
    if bad:
        raise StoreCorruptedError(
            f"memories {', '.join(bad[:10])} hold NaN/inf rows in array {name!r}; forget them "
            "and remember them again, then export")


def _manifest(space: Space, router_id: str | None, live: list[StoredMemory],
              files: dict[str, str]) -> dict[str, Any]:
    from msa_agent import __version__
    from msa_agent.runtime.answer import POOLED_K_SETTING  # here: importing it loads torch

    return {
        "format": FORMAT, "version": VERSION, "msa_agent_version": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "fingerprint": space.fingerprint,
        "space_config": {**(space.get_setting("config") or {}),
                         POOLED_K_SETTING: space.get_setting(POOLED_K_SETTING)},
        "router_id": router_id, "arrays": [s.to_json() for s in space.arrays.values()],
        "counts": {"memories": len(live), "chunk_rows": sum(m.n_chunks for m in live),
                   "token_rows": sum(m.n_tokens for m in live)},
        "files": {"memories": MEMORIES_FILE, "arrays": files},
    }


def _zip(folder: Path, dest: Path) -> None:
    with zipfile.ZipFile(dest, "w", allowZip64=True) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                method = zipfile.ZIP_STORED if p.suffix == ".npy" else zipfile.ZIP_DEFLATED
                z.write(p, p.relative_to(folder).as_posix(), compress_type=method)


# ---------------------------------------------------------------------------------- import
def read_manifest(src: str | Path) -> Manifest:
    """Read and check a bundle's manifest (folder or zip) without importing anything."""
    return check.read_manifest(Path(src))


@contextmanager
def memory_batches(src: str | Path, manifest: Manifest, workdir: Path | None = None,
                   namespace: str | None = None
                   ) -> Iterator[Iterator[tuple[list[NewMemory], list[dict[str, np.ndarray]]]]]:
    """The bundle's memories with their rows of every array, ``BATCH`` at a time.

    Everything is checked on entry, before the caller writes anything (a bad bundle raises
    here). A zip is extracted, within limits, to a scratch folder under ``workdir`` (the
    space's folder, so a crash leaves nothing its next open does not remove). ``namespace``:
    every memory lands in it; None keeps each memory's namespace from the bundle.
    """
    if namespace is not None and (not isinstance(namespace, str) or not namespace):
        raise InvalidInputError(f"namespace must be a non-empty str, got {namespace!r}")
    with check.unpacked(Path(src), manifest, workdir) as folder:
        arrays = check.load_arrays(folder, manifest)
        for _ in check.memories(folder / MEMORIES_FILE, manifest, namespace):
            pass  # the whole file is checked before the first batch is handed out
        yield _batches_of(folder, manifest, arrays, namespace)


def _batches_of(folder: Path, manifest: Manifest, arrays: dict[str, np.ndarray],
                namespace: str | None
                ) -> Iterator[tuple[list[NewMemory], list[dict[str, np.ndarray]]]]:
    offsets = {"chunk": 0, "token": 0}
    batch: list[NewMemory] = []
    for m in check.memories(folder / MEMORIES_FILE, manifest, namespace):
        batch.append(m)
        if len(batch) == BATCH:
            yield batch, [_slice_rows(m, manifest.arrays, arrays, offsets) for m in batch]
            batch = []
    if batch:
        yield batch, [_slice_rows(m, manifest.arrays, arrays, offsets) for m in batch]


def check_compatible(manifest: Manifest, space: Space) -> None:
    """Refuse a bundle whose model fingerprint or array layout differs from the space's."""
    keys = fingerprint_diff(space.fingerprint, manifest.fingerprint)
    if keys:
        raise FingerprintMismatchError(
            f"bundle was encoded with model {manifest.model!r} but the space at {space.path} "
            f"uses {space.fingerprint.get('model')!r} (differing: {', '.join(keys)}); "
            "import it into a new path instead", keys)
    have = {s.name: s for s in manifest.arrays}
    bad = sorted(n for n in set(space.arrays) | set(have) if n not in have
                 or n not in space.arrays or not space.arrays[n].same_layout(have[n]))
    if bad:
        raise FingerprintMismatchError(
            f"bundle arrays differ from the space's: {', '.join(bad)}",
            [f"arrays.{n}" for n in bad])


def _slice_rows(m: NewMemory, specs: list[ArraySpec], arrays: dict[str, np.ndarray],
                offsets: dict[str, int]) -> dict[str, np.ndarray]:
    """This memory's rows of every array; advances ``offsets`` past them."""
    n = {"chunk": m.n_chunks, "token": m.n_tokens}
    rows = {s.name: np.array(arrays[s.name][offsets[s.unit]:offsets[s.unit] + n[s.unit]])
            for s in specs}
    for unit in offsets:
        offsets[unit] += n[unit]
    return rows


# ---------------------------------------------------------------------------------- helpers
def _batches(items: list[Any]) -> Iterator[list[Any]]:
    for i in range(0, len(items), BATCH):
        yield items[i:i + BATCH]
