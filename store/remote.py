"""Opening and creating a remote space: PostgreSQL metadata (store/pg.py) plus arrays at an
fsspec URL (store/roots.py). ``Space`` calls these and then opens the parts as it opens a
local space's."""

from __future__ import annotations

from typing import Any

from .arrays import ArrayStore
from .errors import SpaceExistsError, SpaceLockedError, SpaceNotFoundError
from .location import RemoteLocation
from .meta import MetaStore
from .pg import AdvisoryLock, make_engine, space_exists
from .roots import FsspecRoot, LocalRoot, array_root
from .types import ArraySpec

Parts = tuple[MetaStore, LocalRoot | FsspecRoot, AdvisoryLock | None]


def _root(loc: RemoteLocation) -> LocalRoot | FsspecRoot:
    root = array_root(loc.arrays_url, dict(loc.storage_options))
    if isinstance(root, FsspecRoot):
        root.check()  # an unreachable bucket fails here, with StoreUnavailableError
    return root


def exists(loc: RemoteLocation) -> bool:
    """Whether the database holds the space ``loc.name`` (connects; nothing is locked)."""
    engine = make_engine(loc, durable=True, read_only=True)
    try:
        return space_exists(engine, loc.name)
    finally:
        engine.dispose()


def open_parts(loc: RemoteLocation, durable: bool, read_only: bool) -> Parts:
    """The metadata store, array root and (writers) advisory lock of an existing space."""
    root = _root(loc)
    engine = make_engine(loc, durable, read_only)
    try:
        if not space_exists(engine, loc.name):
            raise SpaceNotFoundError(f"no space {loc}")
        lock = None if read_only else AdvisoryLock(engine, loc)
    except BaseException:
        engine.dispose()
        raise
    meta = MetaStore(engine, durable, read_only, schema=loc.name)
    if lock is not None:
        meta.lock_check = lock.check
    return meta, root, lock


def create(loc: RemoteLocation, fingerprint: dict[str, Any], specs: list[ArraySpec],
           durable: bool) -> Parts:
    """Create the space under its advisory lock, which the returned parts keep.

    The arrays are written first, then ONE PostgreSQL transaction creates the schema, its
    tables and rows. A crash in between leaves array folders and no space: the next create
    refuses them (``SpaceExistsError`` naming them) rather than delete what it did not make.
    """
    root = _root(loc)
    engine = make_engine(loc, durable, read_only=False)
    lock = None
    try:
        lock = AdvisoryLock(engine, loc)
        _check_free(loc, engine, root)
        ArrayStore.create(root, "arrays.zarr", specs)
        meta = MetaStore(engine, durable, schema=loc.name)
        try:
            meta.create(fingerprint, [s.to_json() for s in specs])
        except BaseException:
            root.remove("arrays.zarr")  # ours: we hold the lock and made them just now
            raise
        meta.lock_check = lock.check
        return meta, root, lock
    except SpaceLockedError:
        engine.dispose()
        raise SpaceExistsError(f"space {loc} is being created or written by another "
                               "process; open it instead") from None
    except BaseException:
        if lock is not None:
            lock.release()
        engine.dispose()
        raise


def _check_free(loc: RemoteLocation, engine: Any, root: LocalRoot | FsspecRoot) -> None:
    if space_exists(engine, loc.name):
        raise SpaceExistsError(f"space {loc} already exists")
    taken = root.array_dirs()
    if taken:
        raise SpaceExistsError(
            f"{loc.arrays_url} already holds array folders {sorted(taken)} but the database "
            f"has no space {loc.name!r} (another space's arrays, or a create that crashed): "
            "choose another arrays_url, or delete them")
