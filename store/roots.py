"""Where a space's array folders live: a local folder or an fsspec URL (``s3://...``).

A root holds the space's ``arrays*.zarr`` folders (one, two during a compaction). The local
root can fsync what it wrote; an object store has no fsync: an object is durable once its PUT
returns, and zarr writes each chunk and each ``zarr.json`` with one PUT (docs/store.md).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from zarr.storage import FsspecStore, LocalStore

from .errors import MissingDependencyError, StoreInputError, StoreUnavailableError
from .location import REMOTE_EXTRA, require


class LocalRoot:
    """Array folders under a local directory (the space folder)."""

    local = True

    def __init__(self, path: Path) -> None:
        self.path = path

    def zarr_store(self, sub: str, read_only: bool) -> LocalStore:
        return LocalStore(self.path / sub, read_only=read_only)

    def is_file(self, rel: str) -> bool:
        return (self.path / rel).is_file()

    def exists(self, rel: str) -> bool:
        return (self.path / rel).exists()

    def remove(self, sub: str) -> None:
        shutil.rmtree(self.path / sub, ignore_errors=True)

    def array_dirs(self) -> list[str]:
        return [p.name for p in self.path.glob("arrays*.zarr") if p.is_dir()]

    def size(self, rel: str = "") -> int:
        return dir_size(self.path / rel if rel else self.path)

    def describe(self, rel: str) -> str:
        return str(self.path / rel)


class FsspecRoot:
    """Array folders under an fsspec URL; zarr reads and writes them through ``FsspecStore``."""

    local = False

    def __init__(self, url: str, storage_options: dict[str, Any]) -> None:
        fsspec = require("fsspec", "an array store at a URL")
        self.url, self.options = url.rstrip("/"), dict(storage_options)
        protocol = fsspec.core.split_protocol(self.url)[0] or "file"
        try:
            cls = fsspec.get_filesystem_class(protocol)
        except ValueError:
            raise StoreInputError(f"arrays_url {url!r}: unknown URL scheme {protocol!r} "
                                  "(fsspec knows none by that name)") from None
        except ImportError as e:
            raise require_error(protocol, e) from None
        self.fs = cls(**self.options)
        self.root = self.fs._strip_protocol(self.url)

    def zarr_store(self, sub: str, read_only: bool) -> FsspecStore:
        return FsspecStore.from_url(f"{self.url}/{sub}", storage_options=self.options,
                                    read_only=read_only)

    def _path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def is_file(self, rel: str) -> bool:
        self.fs.invalidate_cache()  # another process may have written it since
        return bool(self._call(self.fs.isfile, self._path(rel)))

    def exists(self, rel: str) -> bool:
        self.fs.invalidate_cache()
        return bool(self._call(self.fs.exists, self._path(rel)))

    def remove(self, sub: str) -> None:
        if self.exists(sub):
            self._call(self.fs.rm, self._path(sub), recursive=True)

    def array_dirs(self) -> list[str]:
        if not self.exists(""):
            return []
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self._call(self.fs.ls, self.root,
                                                                       detail=False)]
        return [n for n in names if n.startswith("arrays") and n.endswith(".zarr")]

    def size(self, rel: str = "") -> int:
        return int(self._call(self.fs.du, self._path(rel))) if self.exists(rel) else 0

    def describe(self, rel: str) -> str:
        return f"{self.url}/{rel}"

    def check(self) -> None:
        """Fail now, with a clear error, when the store cannot be reached."""
        self.exists("")

    def _call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except (FileNotFoundError, PermissionError, OSError) as e:
            raise StoreUnavailableError(
                f"array store {self.url}: {type(e).__name__}: {e}") from None


def require_error(protocol: str, e: ImportError) -> MissingDependencyError:
    return MissingDependencyError(f"arrays at {protocol}:// need a package that is not "
                                  f"installed ({e}); install the remote extra: {REMOTE_EXTRA}")


def array_root(url_or_path: str | Path, storage_options: dict[str, Any] | None = None
               ) -> LocalRoot | FsspecRoot:
    """A ``LocalRoot`` for a path or ``file://`` URL, an ``FsspecRoot`` for any other URL."""
    if isinstance(url_or_path, Path):
        return LocalRoot(url_or_path)
    if url_or_path.startswith("file://") and not storage_options:
        return LocalRoot(Path(url_or_path[len("file://"):]))
    if "://" not in url_or_path:
        return LocalRoot(Path(url_or_path).expanduser())
    return FsspecRoot(url_or_path, storage_options or {})


def dir_size(path: Path) -> int:
    """Bytes of all regular files under ``path``."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_size
            except FileNotFoundError:
                pass
    return total
