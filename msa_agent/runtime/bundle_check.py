"""Reading a bundle safely: its manifest, its files and every row, checked before any write.

A bundle comes from elsewhere, so each check assumes it may be hostile:

- the manifest must name a sha256 for every file it implies (memories.jsonl and one
  arrays/NAME.npy per array), and each file must match it;
- each file's size must fit what the manifest implies: an array file holds exactly
  ``rows x row_bytes`` plus a small header, a memories line at most ``MAX_LINE_BYTES``.
  A zip member's *declared* size is checked before a byte is extracted, its compression
  ratio is capped, extraction is streamed and stops at the declared size, and the total must
  fit the free disk;
- symlinks inside a folder bundle are refused (they could point anywhere);
- every memory line is checked as ``Space.add`` would check it (UTF-8 text, metadata limits)
  and every array for dtype, shape, row counts and NaN/inf.

Every refusal is an ``InvalidInputError`` naming the file and the problem.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from tokenize import TokenError
from typing import IO, Any

import numpy as np

from msa_agent.config import SpaceLayout
from msa_agent.errors import InvalidInputError
from msa_agent.store import ArraySpec, NewMemory, StoreInputError
from msa_agent.store.scratch import clean_stale, scratch_dir
from msa_agent.store.validate import check_memory

FORMAT = "msa-agent-bundle"
VERSION = 1
MEMORIES_FILE = "memories.jsonl"
MANIFEST_FILE = "manifest.json"
FIELDS = ("id", "namespace", "kind", "text", "metadata", "session_id", "user_id", "agent_id",
          "source_id", "part", "n_tokens", "n_chunks")

MAX_MANIFEST_BYTES = 1 << 20
MAX_LINE_BYTES = 8 << 20  # one memory: its text (one part, <= max_doc_tokens) and metadata
NPY_HEADER_MAX = 1 << 16  # an .npy header is a few hundred bytes; numpy allows up to 4 GiB
MAX_RATIO = 100  # uncompressed / compressed size of a zip member (text deflates ~3-10x)
RATIO_FREE_BYTES = 1 << 20  # members smaller than this skip the ratio check
FINITE_BLOCK_BYTES = 64 << 20  # rows checked for NaN/inf per step
_SHA = re.compile(r"[0-9a-f]{64}")
_ZIP_ERRORS = (OSError, EOFError, RuntimeError, NotImplementedError, ValueError, zlib.error,
               zipfile.BadZipFile, zipfile.LargeZipFile)


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` declares about a bundle."""

    fingerprint: dict[str, Any]
    space_config: dict[str, Any]
    router_id: str | None
    arrays: list[ArraySpec]
    memories: int
    sha256: dict[str, str]
    rows: dict[str, int] = field(default_factory=lambda: {"chunk": 0, "token": 0})

    @property
    def model(self) -> str | None:
        """The model the bundle was encoded with (an HF id/path or the embedded default)."""
        return self.space_config.get("model") or self.fingerprint.get("model")

    def layout(self) -> dict[str, Any]:
        """``MemoryConfig`` overrides that recreate the bundle's layout in a new space."""
        stored = {"msa_layers": self.fingerprint.get("msa_layers"), **self.space_config}
        # a layout field the bundle lacks predates it: SpaceLayout's default is what it used
        out = {k: v for k, v in SpaceLayout.from_json(stored).to_json().items()
               if v is not None}
        if self.fingerprint.get("dtype") in ("float32", "bfloat16", "float16"):
            out["dtype"] = self.fingerprint["dtype"]  # compute dtype is part of the fingerprint
        return out

    def files(self) -> dict[str, int]:
        """Every file the bundle must hold, with the most bytes it may take."""
        out = {MEMORIES_FILE: self.memories * MAX_LINE_BYTES}
        for s in self.arrays:
            data = self.rows[s.unit] * math.prod(s.row_shape) * np.dtype(s.dtype).itemsize
            out[f"arrays/{s.name}.npy"] = data + NPY_HEADER_MAX
        return out


# ---------------------------------------------------------------------------------- manifest
def read_manifest(src: Path) -> Manifest:
    """Read and check a bundle's manifest (folder or zip) without importing anything."""
    if not src.exists():
        raise InvalidInputError(f"no bundle at {src}")
    try:
        raw = _zip_manifest(src) if src.is_file() else _folder_manifest(src)
        data = json.loads(raw)
    except InvalidInputError:
        raise
    except (*_ZIP_ERRORS, KeyError, UnicodeDecodeError, RecursionError) as e:
        raise InvalidInputError(f"{src} is not an msa-agent bundle ({e})") from None
    return parse_manifest(src, data)


def _zip_manifest(src: Path) -> bytes:
    with zipfile.ZipFile(src) as z:
        info = _member(z, MANIFEST_FILE, MAX_MANIFEST_BYTES)
        with z.open(info) as f:
            return f.read(MAX_MANIFEST_BYTES + 1)


def _folder_manifest(src: Path) -> bytes:
    path = _no_symlink(src, MANIFEST_FILE)
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise InvalidInputError(f"{path} is larger than {MAX_MANIFEST_BYTES:,} bytes")
    return path.read_bytes()


def parse_manifest(src: Path, data: Any) -> Manifest:
    """The checked ``Manifest`` of the parsed ``manifest.json`` ``data``."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InvalidInputError(f"{src} is not an msa-agent bundle (bad manifest format)")
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version > VERSION:
        raise InvalidInputError(
            f"{src} has bundle version {version!r}; this msa-agent reads up to "
            f"{VERSION}: upgrade msa-agent")
    try:
        counts = data["counts"]
        manifest = Manifest(
            fingerprint=_dict(data["fingerprint"]), space_config=_dict(data["space_config"]),
            router_id=_opt_str(data.get("router_id")),
            arrays=[ArraySpec.from_json(a) for a in data["arrays"]],
            memories=_count(counts["memories"]), sha256=_dict(data["sha256"]),
            rows={"chunk": _count(counts["chunk_rows"]), "token": _count(counts["token_rows"])})
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise InvalidInputError(f"{src}: malformed manifest ({type(e).__name__}: {e})") from None
    _check_declared(src, manifest)
    return manifest


def _dict(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return dict(value)


def _opt_str(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"a count must be a non-negative int, got {value!r}")
    return value


def _check_declared(src: Path, manifest: Manifest) -> None:
    """Unique array names, and a well-formed sha256 for every file the bundle must hold."""
    names = [s.name for s in manifest.arrays]
    if len(set(names)) != len(names):
        raise InvalidInputError(f"{src}: malformed manifest (duplicate arrays in {names})")
    for name in manifest.files():
        digest = manifest.sha256.get(name)
        if not isinstance(digest, str) or not _SHA.fullmatch(digest):
            raise InvalidInputError(
                f"{src}: the manifest gives no valid sha256 for {name}; a bundle without "
                "checksums is refused")


# ---------------------------------------------------------------------------------- files
@contextmanager
def unpacked(src: Path, manifest: Manifest, workdir: Path | None) -> Iterator[Path]:
    """The bundle as a folder, every file's size and checksum verified. A zip is extracted,
    member by member within limits, into a scratch folder under ``workdir`` (default: the
    system's temporary folder), removed on exit and by the next clean after a crash."""
    if src.is_dir():
        _check_folder(src, manifest)
        yield src
        return
    parent = Path(workdir) if workdir is not None else Path(tempfile.gettempdir())
    clean_stale(parent)
    with scratch_dir(parent, "import") as tmp:
        _extract_all(src, manifest, parent, tmp)
        yield tmp


def _extract_all(src: Path, manifest: Manifest, parent: Path, tmp: Path) -> None:
    try:
        with zipfile.ZipFile(src) as z:
            infos = {name: _member(z, name, limit) for name, limit in manifest.files().items()}
            _check_free_disk(parent, sum(i.file_size for i in infos.values()))
            for name, info in infos.items():
                _extract(z, info, tmp / name)
                verify(tmp / name, name, manifest)
    except InvalidInputError:
        raise
    except _ZIP_ERRORS as e:
        raise InvalidInputError(f"{src}: unreadable bundle zip ({type(e).__name__}: {e})"
                                ) from None


def _member(z: zipfile.ZipFile, name: str, limit: int) -> zipfile.ZipInfo:
    """``name``'s entry, refused if missing, duplicated, encrypted or larger than ``limit``
    (declared size) or compressed more than ``MAX_RATIO`` times."""
    infos = [i for i in z.infolist() if i.filename == name]
    if len(infos) != 1:
        raise InvalidInputError(f"bundle {'is missing' if not infos else 'duplicates'} {name}")
    info = infos[0]
    if info.flag_bits & 0x1:
        raise InvalidInputError(f"bundle member {name} is encrypted")
    if info.file_size > limit:
        raise InvalidInputError(f"bundle member {name} declares {info.file_size:,} bytes; "
                                f"its manifest allows at most {limit:,}")
    if info.file_size > RATIO_FREE_BYTES and info.file_size > MAX_RATIO * info.compress_size:
        raise InvalidInputError(f"bundle member {name} is compressed more than {MAX_RATIO}x "
                                "(a zip bomb?); refused")
    return info


def _check_free_disk(parent: Path, need: int) -> None:
    free = shutil.disk_usage(parent).free
    if need > free:
        raise InvalidInputError(f"extracting the bundle needs {need:,} bytes; {parent} has "
                                f"{free:,} free")


def _extract(z: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> None:
    """Stream one member to ``target``, stopping if it yields more than it declared."""
    target.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with z.open(info) as f, open(target, "wb") as out:
        while block := f.read(1 << 20):
            n += len(block)
            if n > info.file_size:
                raise InvalidInputError(f"bundle member {info.filename} is larger than it "
                                        "declares")
            out.write(block)


def _check_folder(src: Path, manifest: Manifest) -> None:
    for name, limit in manifest.files().items():
        path = _no_symlink(src, name)
        if path.stat().st_size > limit:
            raise InvalidInputError(f"bundle file {name} holds {path.stat().st_size:,} bytes; "
                                    f"its manifest allows at most {limit:,}")
        verify(path, name, manifest)


def _no_symlink(src: Path, name: str) -> Path:
    """``src/name`` as a regular file, refusing a symlink anywhere below ``src``."""
    path = src
    for part in Path(name).parts:
        path = path / part
        if path.is_symlink():
            raise InvalidInputError(f"bundle entry {name} is a symlink; refused")
    if not path.is_file():
        raise InvalidInputError(f"bundle is missing {name}")
    return path


def verify(path: Path, name: str, manifest: Manifest) -> None:
    if sha256(path) != manifest.sha256[name]:
        raise InvalidInputError(f"bundle file {name} is corrupted (checksum mismatch)")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------- contents
def load_arrays(folder: Path, manifest: Manifest) -> dict[str, np.ndarray]:
    """Every array, memory-mapped, of the declared dtype and shape and free of NaN/inf."""
    out = {}
    for s in manifest.arrays:
        name, want = f"arrays/{s.name}.npy", (manifest.rows[s.unit], *s.row_shape)
        try:
            arr = np.load(folder / name, mmap_mode="r" if want[0] else None, allow_pickle=False)
        except (ValueError, OSError, EOFError, SyntaxError, TokenError) as e:
            # numpy parses the header as Python literals: a damaged one can also fail in the
            # tokenizer (TokenError) or the parser (SyntaxError), found by the fuzz test
            raise InvalidInputError(f"bundle file {name} is not a valid .npy ({e})") from None
        if not isinstance(arr, np.ndarray) or arr.dtype != np.dtype(s.dtype) or \
                arr.shape != want:
            raise InvalidInputError(
                f"bundle file {name} holds {getattr(arr, 'dtype', '?')} "
                f"{getattr(arr, 'shape', '?')}; the manifest declares {s.dtype} {want}")
        _check_finite(arr, name)
        out[s.name] = arr
    return out


def _check_finite(arr: np.ndarray, name: str) -> None:
    step = max(1, FINITE_BLOCK_BYTES // max(1, arr[:1].nbytes))
    for i in range(0, len(arr), step):
        if not np.isfinite(arr[i:i + step]).all():
            raise InvalidInputError(f"bundle file {name} holds NaN or infinite values "
                                    f"(rows {i}..{min(i + step, len(arr)) - 1})")


def memories(path: Path, manifest: Manifest, namespace: str | None) -> Iterator[NewMemory]:
    """Each memory of ``memories.jsonl`` in order, checked like ``Space.add`` checks it (into
    ``namespace`` when given); the count, unique ids and row totals are checked at the end."""
    ids: set[str] = set()
    rows = {"chunk": 0, "token": 0}
    n = 0
    with open(path, "rb") as f:
        for n, line in enumerate(_lines(f), 1):  # noqa: B007 - n is used after the loop
            m = _memory(line, n, namespace)
            if m.id in ids:
                raise InvalidInputError(f"{MEMORIES_FILE} line {n}: duplicate id {m.id!r}")
            ids.add(m.id or "")
            rows["chunk"] += m.n_chunks
            rows["token"] += m.n_tokens
            yield m
    if n != manifest.memories or rows != manifest.rows:
        raise InvalidInputError(
            f"{MEMORIES_FILE} holds {n} memories with {rows['chunk']} chunk and "
            f"{rows['token']} token rows; the manifest declares {manifest.memories}, "
            f"{manifest.rows['chunk']} and {manifest.rows['token']}")


def _lines(f: IO[bytes]) -> Iterator[bytes]:
    n = 0
    while line := f.readline(MAX_LINE_BYTES + 1):
        n += 1
        if len(line) > MAX_LINE_BYTES:
            raise InvalidInputError(f"{MEMORIES_FILE} line {n} is longer than "
                                    f"{MAX_LINE_BYTES:,} bytes")
        yield line


def _date(value: object) -> datetime | None:
    """An ISO date of a memory line (None stays None)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError("dates must be ISO date strings")
    return datetime.fromisoformat(value)


def _memory(line: bytes, n: int, namespace: str | None) -> NewMemory:
    try:
        d = json.loads(line.decode("utf-8"))
        if not isinstance(d, dict):
            raise TypeError("not a JSON object")
        if d["created_at"] is None:
            raise TypeError("created_at must be an ISO date string")
        m = NewMemory(**{k: d[k] for k in FIELDS}, created_at=_date(d["created_at"]),
                      expires_at=_date(d.get("expires_at")))
        if namespace is not None:
            m = replace(m, namespace=namespace)
        if not isinstance(m.id, str):
            raise TypeError("id must be a string")
        check_memory(m, n - 1)
    except StoreInputError as e:
        raise InvalidInputError(f"{MEMORIES_FILE} line {n}: {e}") from None
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        raise InvalidInputError(f"{MEMORIES_FILE} line {n}: {type(e).__name__}: {e}") from None
    return m
