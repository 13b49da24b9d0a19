"""``Space``: SQL metadata (source of truth) + Zarr v3 arrays. Local: one folder holding
``meta.sqlite`` and ``arrays.zarr``. Remote (``RemoteLocation``): a PostgreSQL schema plus an
fsspec URL (store/remote.py).

Write protocol of ``add`` (see docs/store.md): validate everything, write array rows past the
committed ends, (fsync them when durable), then ONE SQL transaction inserts the rows and
advances the ends. A crash in between leaves only unreferenced rows past the ends.
"""

from __future__ import annotations

import bisect
import fcntl
import hashlib
import os
import threading
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np

from . import remote
from . import validate as v
from .arrays import ArrayStore, gather, merge_ranges
from .compact import compact_arrays, remove_stray_dirs
from .errors import (
    FingerprintMismatchError,
    InvalidQueryError,
    SpaceExistsError,
    SpaceLockedError,
    SpaceNotFoundError,
    SpaceReadOnlyError,
    StoreCorruptedError,
    StoreInputError,
)
from .lexical import query_terms, require_fts5
from .location import RemoteLocation
from .meta import MetaStore, build_filters, id_filter, time_filters
from .pg import AdvisoryLock
from .roots import FsspecRoot, LocalRoot, dir_size
from .scratch import clean_stale, scratch_dir
from .types import ArraySpec, HistoryEvent, NewMemory, StoredMemory

META_FILE = "meta.sqlite"
LOCK_FILE = ".lock"


def _lock(path: Path) -> int:
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SpaceLockedError(f"space {path} is open for writing elsewhere") from None
    return fd


def _unlock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


class _FileLock:
    """A local writer's lock: ``flock`` on ``PATH/.lock``."""

    def __init__(self, path: Path) -> None:
        self.fd = _lock(path)

    def release(self) -> None:
        _unlock(self.fd)


WriterLock = _FileLock | AdvisoryLock
Where = Path | RemoteLocation


def _where(path: str | Path | RemoteLocation) -> Where:
    if isinstance(path, RemoteLocation):
        return path
    if not isinstance(path, str | os.PathLike):
        raise StoreInputError(f"a space is a folder path or a RemoteLocation, got "
                              f"{type(path).__name__}")
    return Path(path).expanduser()


def _build(path: Path, fp: dict[str, Any], specs: list[ArraySpec], durable: bool) -> None:
    """Write an empty space (arrays and database) at ``path``, closed again."""
    path.mkdir()
    store = ArrayStore.create(path, "arrays.zarr", specs)
    if durable:
        store.fsync_group()
    meta = MetaStore(path / META_FILE, durable)
    try:
        meta.create(fp, [s.to_json() for s in specs])
    finally:
        meta.close()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _within(ranges: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]
            ) -> list[tuple[int, int]]:
    """Each range ``[s, e)`` cut to its ``[s + a, s + b)`` for the span ``(a, b)`` given with
    it, refused unless ``0 <= a <= b <= e - s``."""
    if len(spans) != len(ranges):
        raise StoreInputError(f"{len(spans)} spans for {len(ranges)} memories")
    out = []
    for (s, e), (a, b) in zip(ranges, spans, strict=True):
        if not 0 <= a <= b <= e - s:
            raise StoreInputError(f"span [{a}, {b}) outside a memory of {e - s} rows")
        out.append((s + a, s + b))
    return out


def _utc(dt: datetime | None) -> datetime:
    if dt is None:
        return datetime.now(timezone.utc)
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


class Space:
    """A memory space: metadata rows plus per-memory contiguous row ranges in each array.

    Single writer: a writable space holds an exclusive ``flock`` on ``PATH/.lock`` (a remote
    one: a PostgreSQL advisory lock, store/pg.py) until ``close``. Read-only opens take no
    lock and follow the writer's commits. Methods are serialised by an in-process lock, so one
    ``Space`` may be shared between threads. ``path`` is the folder, or the ``RemoteLocation``.
    """

    def __init__(self, path: Where, meta: MetaStore, arrays: ArrayStore,
                 fingerprint: dict[str, Any], ends: dict[str, int], arrays_dir: str,
                 lock: WriterLock | None, durable: bool, read_only: bool = False) -> None:
        self.path = path
        self.fingerprint = fingerprint
        self.arrays: dict[str, ArraySpec] = dict(arrays.specs)
        self._meta, self._store = meta, arrays
        self._root = arrays.root
        self._ends, self._arrays_dir = ends, arrays_dir
        self._lock = lock
        self._durable = durable
        self.read_only = read_only
        self._closed = False
        self._mutex = threading.RLock()

    # -- lifecycle ---------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, fingerprint: dict[str, Any],
               arrays: Sequence[ArraySpec], *, durable: bool = True) -> Space:
        """Create a new space at ``path``; ``SpaceExistsError`` if it holds anything.

        Atomic: the space is built in a scratch folder beside ``path`` and renamed into place,
        so a crash leaves no half-made space (only a scratch folder the next create removes),
        and of two processes creating the same path, the loser gets ``SpaceExistsError``.
        A ``RemoteLocation`` is created under its advisory lock (store/remote.py).
        """
        path = _where(path)
        if isinstance(path, RemoteLocation):
            fp, specs = v.json_normal(fingerprint, "fingerprint"), v.check_specs(arrays)
            require_fts5()
            meta, root, lock = remote.create(path, fp, specs, durable)
            return cls._open_parts(path, meta, root, None, lock, durable, False)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise SpaceExistsError(f"{path} already exists and is not empty")
        fp = v.json_normal(fingerprint, "fingerprint")
        specs = v.check_specs(arrays)
        require_fts5()  # before anything is written, so a failed create leaves no folder
        path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(path.parent)
        with scratch_dir(path.parent, "create") as tmp:
            _build(tmp / "space", fp, specs, durable)
            try:
                os.rename(tmp / "space", path)  # replaces an empty folder, fails otherwise
            except OSError:
                raise SpaceExistsError(
                    f"{path} was created by another process meanwhile; open it instead"
                ) from None
        if durable:
            _fsync_dir(path.parent)
        return cls.open(path, durable=durable)

    @classmethod
    def open(cls, path: str | Path | RemoteLocation, fingerprint: dict[str, Any] | None = None,
             *, durable: bool = True, read_only: bool = False) -> Space:
        """Open an existing space, checking ``fingerprint`` when given.

        ``read_only=True`` takes no lock, so it works next to a writer in another process.
        Each call sees the writer's latest commit; writes raise ``SpaceReadOnlyError``.
        """
        path = _where(path)
        if isinstance(path, RemoteLocation):
            meta, root, lock = remote.open_parts(path, durable, read_only)
            return cls._open_parts(path, meta, root, fingerprint, lock, durable, read_only)
        if not (path / META_FILE).is_file():
            if (path / "arrays.zarr").exists():
                raise StoreCorruptedError(f"{path}: {META_FILE} is missing")
            raise SpaceNotFoundError(f"no space at {path}")
        lock = None if read_only else _FileLock(path)
        meta = MetaStore(path / META_FILE, durable, read_only)
        return cls._open_parts(path, meta, LocalRoot(path), fingerprint, lock, durable,
                               read_only)

    @classmethod
    def _open_parts(cls, path: Where, meta: MetaStore, root: LocalRoot | FsspecRoot,
                    fingerprint: dict[str, Any] | None, lock: WriterLock | None,
                    durable: bool, read_only: bool) -> Space:
        """Open a space from its parts; a failed open releases the lock and the database."""
        try:
            return cls._open_with(path, meta, root, fingerprint, lock, durable, read_only)
        except BaseException as e:
            meta.close()
            if lock is not None:
                lock.release()
            if isinstance(e, StoreCorruptedError) and str(path) not in str(e):
                raise StoreCorruptedError(f"space {path}: {e}") from None
            raise

    @classmethod
    def _open_with(cls, path: Where, meta: MetaStore, root: LocalRoot | FsspecRoot,
                   fingerprint: dict[str, Any] | None, lock: WriterLock | None,
                   durable: bool, read_only: bool) -> Space:
        info = meta.load()
        try:
            specs = [ArraySpec.from_json(d) for d in info.arrays]
        except (KeyError, TypeError, ValueError) as e:
            raise StoreCorruptedError(f"{path}: bad array specs in metadata: {e}") from None
        if fingerprint is not None:
            v.check_fingerprint(path, info.fingerprint, fingerprint)
        ends = {"chunk": info.n_chunk_rows, "token": info.n_token_rows}
        store = ArrayStore.open(root, info.arrays_dir, specs, ends, read_only)
        space = cls(path, meta, store, info.fingerprint, ends, info.arrays_dir, lock, durable,
                    read_only)
        if not read_only:
            meta.upgrade()  # an older space gets its lexical index built from its rows
            remove_stray_dirs(root, info.arrays_dir)
            if isinstance(path, Path):
                clean_stale(path)  # scratch of a killed import/export (we hold the lock)
                clean_stale(path.parent)  # and of a killed create of this (or a sibling) space
            space._apply_wipes()
        return space

    @staticmethod
    def check_where(where: Mapping[str, Any] | None) -> None:
        """Raise the error ``find`` would raise for this ``where``, without a query."""
        build_filters(None, where)

    @staticmethod
    def is_space(path: str | Path | RemoteLocation) -> bool:
        """Whether ``path`` holds a space (its metadata database); no file is opened (a
        ``RemoteLocation`` is asked of its database)."""
        if isinstance(path, RemoteLocation):
            return remote.exists(path)
        return (Path(path) / META_FILE).is_file()

    @staticmethod
    def _creatable(path: Where) -> bool:
        if isinstance(path, RemoteLocation):
            return not remote.exists(path)
        return not (path / META_FILE).is_file() and not (path.exists() and any(path.iterdir()))

    @property
    def workdir(self) -> Path | None:
        """The local folder of the space (scratch files of import/export go there), or None
        for a remote space."""
        return self.path if isinstance(self.path, Path) else None

    @classmethod
    def open_or_create(cls, path: str | Path | RemoteLocation, fingerprint: dict[str, Any],
                       arrays: Sequence[ArraySpec], *, durable: bool = True) -> Space:
        """Open the space at ``path`` (checking fingerprint and array layout) or create it."""
        path = _where(path)
        if cls._creatable(path):
            try:
                return cls.create(path, fingerprint, arrays, durable=durable)
            except SpaceExistsError:
                pass  # another process created it first: open theirs (checked below)
        space = cls.open(path, fingerprint, durable=durable)
        want = {s.name: s for s in v.check_specs(arrays)}
        have = space.arrays
        bad = sorted(n for n in set(want) | set(have)
                     if n not in want or n not in have or not want[n].same_layout(have[n]))
        if bad:
            space.close()
            raise FingerprintMismatchError(
                f"space {path} declares different arrays: {bad}", [f"arrays.{n}" for n in bad])
        return space

    def close(self) -> None:
        """Release the database and the writer lock. Idempotent."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            self._meta.close()
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def __enter__(self) -> Space:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Space({str(self.path)!r}, arrays={list(self.arrays)})"

    def _check_open(self) -> None:
        if self._closed:
            raise StoreInputError("space is closed")
        if self.read_only:
            self._follow_writer()

    def _check_writable(self) -> None:
        self._check_open()
        if self.read_only:
            raise SpaceReadOnlyError(f"space {self.path} was opened read-only")

    def generation(self) -> tuple[Any, ...]:
        """A value that changes with every committed write (add, update, delete, compact):
        how a read-only view notices its writer's commits."""
        self._check_open()  # a read-only view has just followed its writer's ends here
        return (self._arrays_dir, self._ends["chunk"], self._ends["token"],
                self._meta.count([]))

    def _follow_writer(self) -> None:
        """Read-only view: pick up the writer's committed ends and (after compact) folder."""
        n_chunk_rows, n_token_rows, arrays_dir = self._meta.ends()
        ends = {"chunk": n_chunk_rows, "token": n_token_rows}
        if arrays_dir != self._arrays_dir:
            self._store = ArrayStore.open(self._root, arrays_dir,
                                          list(self.arrays.values()), ends, read_only=True)
            self._arrays_dir = arrays_dir
        self._ends = ends

    # -- writes ------------------------------------------------------------------------------
    def add(self, memories: Sequence[NewMemory], data: Sequence[Mapping[str, np.ndarray]],
            *, replace: Sequence[str] = ()) -> list[str]:
        """Add a batch atomically: all memories become visible together, or none does.

        ``data[i]`` maps every declared array name to ``memories[i]``'s rows: ``n_chunks``
        rows for "chunk" arrays, ``n_tokens`` rows for "token" arrays. Returns the new ids.
        ``replace``: source ids whose every part is deleted in the same transaction (an
        update: the batch may reuse their ids; a crash leaves the old version or the new).
        A part 0 with a ``key`` sets that key of its namespace to its source. The history
        records one event per source, in the same transaction.
        """
        v.check_batch(memories, data, self.arrays)
        if isinstance(replace, str):
            raise StoreInputError("replace must be a sequence of ids, not a str")
        if not memories:
            return []
        with self._mutex:
            self._check_writable()
            self._check_new_ids(memories, set(replace))
            self._meta.check_storable(memories)
            stored = self._allocate(memories)
            ends = {u: self._ends[u] + sum(v.rows_for(m, u) for m in memories)
                    for u in ("chunk", "token")}
            for name, spec in self.arrays.items():
                self._write_batch(name, spec, data, ends)
            keys = [(s.namespace, m.key, s.source_id or s.id)
                    for m, s in zip(memories, stored) if m.key is not None and m.part == 0]
            self._meta.commit_add(stored, (ends["chunk"], ends["token"]), list(replace), keys)
            self._ends = ends
            if replace:
                self._apply_wipes()
            return [m.id for m in stored]

    def _check_new_ids(self, memories: Sequence[NewMemory], replaced: set[str]) -> None:
        """Pre-assigned ids must be unique in the batch and new to the space (or belong to
        a source being replaced)."""
        given = [m.id for m in memories if m.id is not None]
        taken = self._meta.get_many(given).values() if given else []
        if len(set(given)) != len(given) or any(
                (m.source_id or m.id) not in replaced for m in taken):
            raise StoreInputError("a pre-assigned memory id is duplicated or already exists")

    def _allocate(self, memories: Sequence[NewMemory]) -> list[StoredMemory]:
        out, chunk, token = [], self._ends["chunk"], self._ends["token"]
        for m in memories:
            out.append(StoredMemory(
                id=m.id or uuid.uuid4().hex, namespace=m.namespace, kind=m.kind, text=m.text,
                metadata=v.json_normal(m.metadata, "metadata"), session_id=m.session_id,
                user_id=m.user_id, agent_id=m.agent_id, source_id=m.source_id,
                part=int(m.part), created_at=_utc(m.created_at), token_start=token,
                n_tokens=int(m.n_tokens), chunk_start=chunk, n_chunks=int(m.n_chunks),
                content_hash=hashlib.sha256(m.text.encode()).hexdigest(),
                expires_at=None if m.expires_at is None else _utc(m.expires_at)))
            chunk, token = chunk + m.n_chunks, token + m.n_tokens
        return out

    def _write_batch(self, name: str, spec: ArraySpec,
                     data: Sequence[Mapping[str, np.ndarray]], ends: dict[str, int]) -> None:
        start, stop = self._ends[spec.unit], ends[spec.unit]
        if stop == start:
            return
        rows = np.concatenate([d[name] for d in data], axis=0)  # one slice write per array
        self._store.write(name, start, rows)
        if self._durable:
            self._store.fsync(name, start, stop)

    def delete(self, ids: Sequence[str]) -> int:
        """Delete memories by id: rows gone and their array rows zeroed. Returns how many."""
        if isinstance(ids, str):
            raise StoreInputError("ids must be a sequence of ids, not a str")
        ids = list(dict.fromkeys(ids))
        step = 10_000  # SQLite bound-variable limit; each batch is its own transaction
        return sum(self._delete(id_filter(ids[i:i + step])) for i in range(0, len(ids), step))

    def delete_where(self, namespace: str | None, where: Mapping[str, Any]) -> int:
        """Delete every memory of ``namespace`` (None = all) matching ``where``."""
        return self._delete(build_filters(namespace, where))

    def _delete(self, conds: list[Any]) -> int:
        with self._mutex:
            self._check_writable()
            gone = self._meta.delete(conds)  # also records pending wipes, same transaction
            self._apply_wipes()
            return len(gone)

    def _apply_wipes(self) -> None:
        """Zero the array ranges of deleted memories, then forget them."""
        wipes = self._meta.pending_wipes()
        if not wipes:
            return
        for name, spec in self.arrays.items():
            ranges = [(a, b) for _, unit, a, b in wipes if unit == spec.unit]
            self._store.zero(name, ranges)
            if self._durable:
                for a, b in merge_ranges(ranges, gap=0):
                    self._store.fsync(name, a, min(b, self._store.arrays[name].shape[0]))
        self._meta.clear_wipes([w[0] for w in wipes])

    def overwrite(self, name: str, memory: StoredMemory, rows: np.ndarray) -> None:
        """Rewrite ``memory``'s rows of array ``name`` (e.g. routing keys after a router change).

        Not atomic across a crash (the rows are derived data and can be recomputed).
        """
        spec = self._spec(name)
        with self._mutex:
            self._check_writable()
            current = self._meta.get_many([memory.id]).get(memory.id)
            if current is None:
                raise KeyError(f"memory {memory.id} does not exist")
            v.check_rows(spec, rows, v.rows_for(current, spec.unit), f"rows for {name!r}")
            start, stop = current.rows(spec.unit)
            self._store.write(name, start, rows)
            if self._durable and stop > start:
                self._store.fsync(name, start, stop)

    def set_setting(self, key: str, value: Any) -> None:
        """Store a small JSON value under ``key``."""
        v.json_normal(value, f"setting {key!r}")
        with self._mutex:
            self._check_writable()
            self._meta.set_setting(key, value)

    # -- reads -------------------------------------------------------------------------------
    def get(self, id: str) -> StoredMemory | None:
        """The memory with this id, or None."""
        found = self.get_many([id])
        return found[0] if found else None

    def get_many(self, ids: Sequence[str]) -> list[StoredMemory]:
        """Memories for ``ids`` in the given order; unknown ids are skipped."""
        with self._mutex:
            self._check_open()
            found = self._meta.get_many(ids)
        return [found[i] for i in ids if i in found]

    def created_times(self, ids: Sequence[str]) -> dict[str, datetime]:
        """``created_at`` of each known id (unknown ids are left out): cheaper than
        :meth:`get_many` when only the times are needed (ranking a candidate pool)."""
        with self._mutex:
            self._check_open()
            return self._meta.created_times(ids)

    def find(self, namespace: str | None = None, where: Mapping[str, Any] | None = None,
             limit: int | None = None, offset: int = 0,
             order: Literal["created_at", "-created_at"] = "created_at",
             since: datetime | None = None, until: datetime | None = None,
             alive_at: datetime | None = None) -> list[StoredMemory]:
        """Memories of ``namespace`` (None = all) matching ``where``, ordered by creation.

        ``where`` holds equality filters on kind/session_id/user_id/agent_id/source_id or on
        top-level metadata keys (any other key; prefix ``metadata.`` to force); a list is IN.
        ``since <= created_at < until`` when given (naive datetimes are taken as UTC).
        ``alive_at``: leave out memories expired at that time (None: keep them).
        """
        if order not in ("created_at", "-created_at"):
            raise StoreInputError(f"order must be 'created_at' or '-created_at', got {order!r}")
        if (limit is not None and limit < 0) or offset < 0:
            raise StoreInputError("limit and offset must be non-negative")
        conds = build_filters(namespace, where) + time_filters(since, until)
        with self._mutex:
            self._check_open()
            conds += self._meta.alive(alive_at)
            return self._meta.find(conds, limit, offset, order == "-created_at")

    def count(self, namespace: str | None = None, where: Mapping[str, Any] | None = None,
              since: datetime | None = None, until: datetime | None = None,
              alive_at: datetime | None = None) -> int:
        """How many memories ``find(namespace, where, since=, until=, alive_at=)`` would
        return."""
        conds = build_filters(namespace, where) + time_filters(since, until)
        with self._mutex:
            self._check_open()
            return self._meta.count(conds + self._meta.alive(alive_at))

    def expired(self, at: datetime, namespace: str | None = None) -> list[str]:
        """Ids of the memories (of ``namespace``; None = all) expired at ``at``: their
        ``expires_at`` is at or before it. Usually few; indexed."""
        with self._mutex:
            self._check_open()
            return self._meta.expired(at, namespace)

    def lexical_search(self, query: str, k: int, namespace: str | None,
                       where: Mapping[str, Any] | None = None, since: datetime | None = None,
                       until: datetime | None = None, alive_at: datetime | None = None
                       ) -> list[tuple[str, float]]:
        """The ``k`` best memories for free-text ``query`` by BM25: ``(id, score)``, best first,
        higher is better. Filtered exactly like ``find`` (namespace, ``where``, time) BEFORE
        the top-k (``alive_at`` as ``find``'s). The query is tokenized safely
        (store/lexical.py); one with no searchable word left after stop words returns [].
        """
        if not isinstance(query, str):
            raise InvalidQueryError(f"query must be a str, got {type(query).__name__}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise InvalidQueryError(f"k must be a non-negative int, got {k!r}")
        conds = build_filters(namespace, where) + time_filters(since, until)
        terms = query_terms(query)
        with self._mutex:
            self._check_open()
            if not self._meta.lexical_ready:
                raise SpaceReadOnlyError(f"space {self.path} predates the lexical index; "
                                         "open it once for writing to build it")
            conds += self._meta.alive(alive_at)
            limit = min(k, v.INT64[1])  # "all of them": SQL's LIMIT takes 64 bits at most
            return self._meta.lexical_search(terms, conds, limit) if terms and k else []

    def matched_terms(self, query: str, ids: Sequence[str]) -> dict[str, set[str]]:
        """Which of ``query``'s search terms (store/lexical.py) each memory of ``ids``
        contains; memories with none of them, or unknown, are left out."""
        terms = query_terms(query) if isinstance(query, str) else []
        with self._mutex:
            self._check_open()
            if not self._meta.lexical_ready or not terms or not ids:
                return {}
            return self._meta.matched_terms(terms, list(ids))

    def rare_terms(self, text: str, n: int, exclude: str = "") -> list[str]:
        """The ``n`` words of ``text`` that the fewest memories contain, at least two
        (case-folded; stop words and the words of ``exclude`` left out): its most specific
        words that link it to another memory."""
        with self._mutex:
            self._check_open()
            if not self._meta.lexical_ready:
                return []
            return self._meta.rare_terms(text, n, set(query_terms(exclude)))

    def read(self, name: str, memories: Sequence[StoredMemory],
             spans: Sequence[tuple[int, int]] | None = None) -> list[np.ndarray]:
        """Each memory's rows of array ``name``, in order; with ``spans``, only its rows
        ``[a, b)`` counted from its first row (a window of a per-token array: nothing else of
        the memory is read from disk).

        Nearby ranges are merged into few contiguous slice reads; the results are views
        into those blocks. ``StoredMemory`` objects from before a ``compact`` are stale.
        """
        spec = self._spec(name)
        ranges = [m.rows(spec.unit) for m in memories]
        if spans is not None:
            ranges = _within(ranges, spans)
        with self._mutex:
            self._check_open()
            end = self._ends[spec.unit]
            if any(a < 0 or b > end for a, b in ranges):
                raise StoreInputError("a memory's rows lie outside the committed rows (stale?)")
            blocks = merge_ranges(ranges, gap=spec.chunk_rows)
            data = [self._store.read(name, a, b) for a, b in blocks]
        starts = [a for a, _ in blocks]
        empty = np.zeros((0, *spec.row_shape), dtype=spec.dtype)
        out = []
        for a, b in ranges:
            if b <= a:
                out.append(empty)
                continue
            k = bisect.bisect_right(starts, a) - 1  # the block holding [a, b)
            out.append(data[k][a - starts[k]:b - starts[k]])
        return out

    def read_all(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Every live row of ``name`` concatenated, and each row's owner index (int64).

        Owner ``i`` refers to ``live_chunks()[i]`` (same order, as long as nothing is written
        in between: the runtime reads both under its lock). One contiguous
        slice read; dead rows of deleted memories are dropped in RAM.
        """
        spec = self._spec(name)
        with self._mutex:
            self._check_open()
            ranges = self._meta.live_ranges(spec.unit)
            block, owners = self._gather_live(name, ranges)
            if block.dtype.kind == "f" and not np.isfinite(block).all():
                self._refuse_nonfinite(name, block, owners)
            return block, owners

    def _refuse_nonfinite(self, name: str, block: np.ndarray, owners: np.ndarray) -> None:
        """Rows with NaN/inf would rank first for every query: refuse to hand them out,
        naming the memories to forget (``Space.add`` refuses such rows, so only damage on
        disk or a space written before that check gets here)."""
        finite = np.isfinite(block.reshape(len(block), -1)).all(axis=1)
        live = self._meta.live()
        ids = [live[i].id for i in np.unique(owners[~finite]).tolist()]
        raise StoreCorruptedError(
            f"space {self.path}: {len(ids)} memories hold NaN/inf rows in array {name!r} "
            f"(ids: {', '.join(ids[:10])}{' ...' if len(ids) > 10 else ''}); delete them with "
            "msa_agent.store.Space.open(path).delete(ids) and remember them again")

    def _gather_live(self, name: str, ranges: list[tuple[int, int]]
                     ) -> tuple[np.ndarray, np.ndarray]:
        lo = min((a for a, b in ranges if b > a), default=0)
        hi = max((b for a, b in ranges if b > a), default=0)
        block = self._store.read(name, lo, hi)  # (hi - lo, *row_shape), one slice
        lens = np.fromiter((b - a for a, b in ranges), dtype=np.int64, count=len(ranges))
        owners = np.repeat(np.arange(len(ranges), dtype=np.int64), lens)
        if len(owners) != len(block):
            block = block[gather(block, lo, ranges)]
        return block, owners

    def live_chunks(self) -> list[StoredMemory]:
        """All memories ordered by array position: what ``read_all``'s owners index."""
        with self._mutex:
            self._check_open()
            return self._meta.live()

    def history(self, memory_id: str) -> list[HistoryEvent]:
        """Every add, update and forget of the source ``memory_id`` (its first part's id),
        oldest first; it outlives the memory. Empty for an unknown id (or a space made before
        history, opened read-only)."""
        with self._mutex:
            self._check_open()
            return self._meta.history(memory_id)

    def keyed(self, namespace: str, key: str) -> str | None:
        """The source id that the caller's ``key`` names in ``namespace`` (``NewMemory.key``),
        or None."""
        with self._mutex:
            self._check_open()
            return self._meta.keyed(namespace, key)

    def with_hash(self, namespace: str, content_hash: str) -> list[StoredMemory]:
        """First parts of ``namespace`` whose own text has sha256 ``content_hash`` (the indexed
        ``content_hash`` column): the candidates of a duplicate, in array order."""
        with self._mutex:
            self._check_open()
            return self._meta.with_hash(namespace, content_hash)

    def get_setting(self, key: str) -> Any:
        """The JSON value stored under ``key``, or None."""
        with self._mutex:
            self._check_open()
            return self._meta.get_setting(key)

    def namespaces(self) -> list[str]:
        """Namespaces that hold at least one memory, sorted."""
        with self._mutex:
            self._check_open()
            return list(self._meta.namespace_counts())

    def stats(self) -> dict[str, Any]:
        """Counts and sizes: memories, per-namespace counts, tokens, chunks, bytes on disk."""
        with self._mutex:
            self._check_open()
            n, tokens, chunks = self._meta.totals()
            local = self.workdir
            sqlite_bytes = 0 if local is None else sum(
                (local / f).stat().st_size for f in
                (META_FILE, META_FILE + "-wal", META_FILE + "-shm") if (local / f).exists())
            return {
                "memories": n, "namespaces": self._meta.namespace_counts(),
                "tokens": tokens, "chunks": chunks,
                "committed_rows": dict(self._ends),
                "arrays": {name: {"unit": s.unit, "capacity_rows":
                                  self._store.arrays[name].shape[0],
                                  "bytes_on_disk": self._store.nbytes_on_disk(name)}
                           for name, s in self.arrays.items()},
                "sqlite_bytes": sqlite_bytes,
                "bytes_on_disk": dir_size(local) if local is not None else self._root.size(),
            }

    def dead_fraction(self) -> float:
        """Share of committed array rows (chunks and tokens together) that no memory owns:
        what ``compact`` would reclaim."""
        with self._mutex:
            self._check_open()
            _, tokens, chunks = self._meta.totals()
            committed = self._ends["chunk"] + self._ends["token"]
            return 0.0 if committed == 0 else 1 - (chunks + tokens) / committed

    def _spec(self, name: str) -> ArraySpec:
        if name not in self.arrays:
            raise KeyError(f"no array {name!r}; space has {sorted(self.arrays)}")
        return self.arrays[name]

    def compact(self) -> None:
        """Rewrite the arrays without dead rows into a new folder, then switch to it.

        Crash-safe (see ``store/compact.py``). ``StoredMemory`` objects from before are stale.
        """
        with self._mutex:
            self._check_writable()
            self._store, self._arrays_dir, self._ends = compact_arrays(
                self._root, self._meta, self._store, self._arrays_dir, self._durable)
