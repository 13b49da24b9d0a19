"""Portable, versioned export/import of a memory space ("bundle").

A bundle is a folder (or the same folder zipped, when the path ends in ``.zip``)::

    manifest.json      {format, version, fingerprint, space_config, router_id, arrays, counts,
                        files, sha256}
    memories.jsonl     one memory per line: id, namespace, kind, text, metadata, ids, part,
                       created_at, n_tokens, n_chunks (in array order)
    arrays/NAME.npy    every memory's rows of array NAME, concatenated in memories.jsonl order

Import checks the model fingerprint (a space of another model is refused), keeps ids and
creation times, skips ids the space already holds (so a re-run resumes), and re-encodes the
routing keys when the bundle was made with another router. Each batch is atomic; the whole
import is not (a crash mid-way leaves the batches done so far, and a re-run completes it).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from msa_agent.config import SpaceLayout
from msa_agent.errors import InvalidInputError
from msa_agent.runtime.answer import POOLED_K_SETTING
from msa_agent.store import ArraySpec, FingerprintMismatchError, NewMemory, Space, StoredMemory
from msa_agent.store.validate import fingerprint_diff

FORMAT = "msa-agent-bundle"
VERSION = 1
MEMORIES_FILE = "memories.jsonl"
MANIFEST_FILE = "manifest.json"
BATCH = 256  # memories per read (export) and per atomic write (import)
Progress = Callable[[int], None]  # called with the number of memories just processed

_FIELDS = ("id", "namespace", "kind", "text", "metadata", "session_id", "user_id", "agent_id",
           "source_id", "part", "n_tokens", "n_chunks")


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` declares about a bundle."""

    fingerprint: dict[str, Any]
    space_config: dict[str, Any]
    router_id: str | None
    arrays: list[ArraySpec]
    memories: int
    sha256: dict[str, str]

    @property
    def model(self) -> str | None:
        """The model the bundle was encoded with (an HF id/path or the embedded default)."""
        return self.space_config.get("model") or self.fingerprint.get("model")

    def layout(self) -> dict[str, Any]:
        """``MemoryConfig`` overrides that recreate the bundle's layout in a new space."""
        stored = {"msa_layers": self.fingerprint.get("msa_layers"), **self.space_config}
        out = {k: v for k, v in SpaceLayout.from_json(stored).to_json().items()
               if k in stored and stored[k] is not None}
        if self.fingerprint.get("dtype") in ("float32", "bfloat16", "float16"):
            out["dtype"] = self.fingerprint["dtype"]  # compute dtype is part of the fingerprint
        return out


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
    """Write the memories of ``space`` (optionally only ``namespaces``) as a bundle at ``dest``.

    ``dest`` must not exist; a name ending in ``.zip`` gives a zip file, anything else a folder.
    """
    dest = Path(dest)
    if dest.exists():
        raise InvalidInputError(f"{dest} already exists; choose a new bundle path")
    dest.parent.mkdir(parents=True, exist_ok=True)
    live = [m for m in space.live_chunks() if namespaces is None or m.namespace in namespaces]
    with tempfile.TemporaryDirectory(prefix=".msa-export-", dir=dest.parent) as tmp:
        folder = Path(tmp) / "bundle"
        _write_folder(space, router_id, live, folder, progress)
        if dest.suffix == ".zip":
            _zip(folder, dest)
        else:
            folder.rename(dest)
    size = dest.stat().st_size if dest.is_file() else sum(
        p.stat().st_size for p in dest.rglob("*") if p.is_file())
    return ExportReport(str(dest), len(live), size)


def _write_folder(space: Space, router_id: str | None, live: list[StoredMemory], folder: Path,
                  progress: Progress | None) -> None:
    (folder / "arrays").mkdir(parents=True)
    with open(folder / MEMORIES_FILE, "w", encoding="utf-8") as f:
        for m in live:
            f.write(json.dumps(_memory_json(m), ensure_ascii=False) + "\n")
    files = {name: f"arrays/{name}.npy" for name in space.arrays}
    outs = {name: _open_npy(folder / rel, space.arrays[name], live) for name, rel in files.items()}
    offsets = {"chunk": 0, "token": 0}
    for batch in _batches(live):
        for name, spec in space.arrays.items():
            rows = space.read(name, batch)
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
    manifest["sha256"] = {rel: _sha256(folder / rel) for rel in [MEMORIES_FILE, *files.values()]}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def _advance(offsets: dict[str, int], batch: Sequence[StoredMemory]) -> None:
    offsets["chunk"] += sum(m.n_chunks for m in batch)
    offsets["token"] += sum(m.n_tokens for m in batch)


def _open_npy(path: Path, spec: ArraySpec, live: list[StoredMemory]) -> np.ndarray:
    n = sum(m.n_chunks if spec.unit == "chunk" else m.n_tokens for m in live)
    return np.lib.format.open_memmap(path, mode="w+", dtype=spec.dtype,
                                     shape=(n, *spec.row_shape))


def _memory_json(m: StoredMemory) -> dict[str, Any]:
    out = {k: getattr(m, k) for k in _FIELDS}
    out["created_at"] = m.created_at.isoformat()
    return out


def _manifest(space: Space, router_id: str | None, live: list[StoredMemory],
              files: dict[str, str]) -> dict[str, Any]:
    from msa_agent import __version__

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
    partial = dest.with_name(dest.name + ".partial")
    with zipfile.ZipFile(partial, "w", allowZip64=True) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                method = zipfile.ZIP_STORED if p.suffix == ".npy" else zipfile.ZIP_DEFLATED
                z.write(p, p.relative_to(folder).as_posix(), compress_type=method)
    partial.rename(dest)


# ---------------------------------------------------------------------------------- import
def read_manifest(src: str | Path) -> Manifest:
    """Read and check a bundle's manifest (folder or zip) without importing anything."""
    src = Path(src)
    if not src.exists():
        raise InvalidInputError(f"no bundle at {src}")
    try:
        if src.is_file():
            with zipfile.ZipFile(src) as z:
                raw = z.read(MANIFEST_FILE)
        else:
            raw = (src / MANIFEST_FILE).read_bytes()
        data = json.loads(raw)
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise InvalidInputError(f"{src} is not an msa-agent bundle ({e})") from None
    return _parse_manifest(src, data)


def _parse_manifest(src: Path, data: Any) -> Manifest:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InvalidInputError(f"{src} is not an msa-agent bundle (bad manifest format)")
    if not isinstance(data.get("version"), int) or data["version"] > VERSION:
        raise InvalidInputError(
            f"{src} has bundle version {data.get('version')!r}; this msa-agent reads up to "
            f"{VERSION}: upgrade msa-agent")
    try:
        return Manifest(
            fingerprint=dict(data["fingerprint"]), space_config=dict(data["space_config"]),
            router_id=data.get("router_id"),
            arrays=[ArraySpec.from_json(a) for a in data["arrays"]],
            memories=int(data["counts"]["memories"]), sha256=dict(data.get("sha256") or {}))
    except (KeyError, TypeError, ValueError) as e:
        raise InvalidInputError(f"{src}: malformed manifest ({e})") from None


@contextmanager
def memory_batches(src: str | Path, manifest: Manifest
                   ) -> Iterator[Iterator[tuple[list[NewMemory], list[dict[str, np.ndarray]]]]]:
    """The bundle's memories with their rows of every array, ``BATCH`` at a time.

    Checksums are verified first; a zip is extracted to a temporary folder for the duration.
    """
    with _unpacked(Path(src), manifest) as folder:
        arrays = {s.name: np.load(folder / f"arrays/{s.name}.npy", mmap_mode="r")
                  for s in manifest.arrays}
        yield _batches_of(folder, manifest, arrays)


def _batches_of(folder: Path, manifest: Manifest, arrays: dict[str, np.ndarray]
                ) -> Iterator[tuple[list[NewMemory], list[dict[str, np.ndarray]]]]:
    offsets = {"chunk": 0, "token": 0}
    for batch in _batches(list(_read_memories(folder / MEMORIES_FILE))):
        rows = [_slice_rows(d, manifest.arrays, arrays, offsets) for d in batch]
        memories = [NewMemory(**{k: d[k] for k in _FIELDS}, created_at=d["created_at"])
                    for d in batch]
        yield memories, rows


def check_compatible(manifest: Manifest, space: Space) -> None:
    """Refuse a bundle whose model fingerprint or array layout differs from the space's."""
    keys = fingerprint_diff(space.fingerprint, manifest.fingerprint)
    if keys:
        raise FingerprintMismatchError(
            f"bundle was encoded with model {manifest.model!r} but the space at {space.path} "
            f"uses {space.fingerprint.get('model')!r} (differing: {', '.join(keys)}); "
            "import it into a new path instead", keys)
    have = {s.name: s for s in manifest.arrays}
    bad = sorted(n for n, s in space.arrays.items() if n not in have or not s.same_layout(have[n]))
    if bad:
        raise FingerprintMismatchError(
            f"bundle arrays differ from the space's: {', '.join(bad)}",
            [f"arrays.{n}" for n in bad])


@contextmanager
def _unpacked(src: Path, manifest: Manifest) -> Iterator[Path]:
    """The bundle as a folder (a zip is extracted to a temporary one), checksums verified."""
    names = [MEMORIES_FILE, *(f"arrays/{s.name}.npy" for s in manifest.arrays)]
    if src.is_dir():
        _verify(src, names, manifest)
        yield src
        return
    with tempfile.TemporaryDirectory(prefix=".msa-import-") as tmp, zipfile.ZipFile(src) as z:
        for name in names:  # only the files the manifest names: no path from the archive is used
            target = Path(tmp) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(name) as f, open(target, "wb") as out:
                shutil.copyfileobj(f, out, 1 << 20)
        _verify(Path(tmp), names, manifest)
        yield Path(tmp)


def _verify(folder: Path, names: list[str], manifest: Manifest) -> None:
    for name in names:
        if not (folder / name).is_file():
            raise InvalidInputError(f"bundle is missing {name}")
        want = manifest.sha256.get(name)
        if want is not None and _sha256(folder / name) != want:
            raise InvalidInputError(f"bundle file {name} is corrupted (checksum mismatch)")


def _read_memories(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            try:
                d = json.loads(line)
                d["created_at"] = datetime.fromisoformat(d["created_at"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise InvalidInputError(f"{MEMORIES_FILE} line {n}: {e}") from None
            yield d


def _slice_rows(d: dict[str, Any], specs: list[ArraySpec], arrays: dict[str, np.ndarray],
                offsets: dict[str, int]) -> dict[str, np.ndarray]:
    """This memory's rows of every array; advances ``offsets`` past them."""
    n = {"chunk": int(d["n_chunks"]), "token": int(d["n_tokens"])}
    rows = {s.name: np.array(arrays[s.name][offsets[s.unit]:offsets[s.unit] + n[s.unit]])
            for s in specs}
    for unit in offsets:
        offsets[unit] += n[unit]
    return rows


# ---------------------------------------------------------------------------------- helpers
def _batches(items: list[Any]) -> Iterator[list[Any]]:
    for i in range(0, len(items), BATCH):
        yield items[i:i + BATCH]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
