"""Scratch folders that a crash cannot leak: ``PARENT/.msa-tmp-<tag>-<random>``.

Each holds a ``.owner`` file ``flock``-ed by the process using it; the kernel drops the lock
when that process dies, however it dies. ``clean_stale(parent)`` removes every scratch folder
of ``parent`` whose lock nobody holds, so the next open of a space (or the next export into
the same folder) deletes what a killed one left, copies of forgotten text included.

A scratch folder made outside a space can be *pointed to* from the space with ``note``: a
``.msa-tmp-<...>.ref`` file naming it, so the space's next open cleans it wherever it is.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PREFIX = ".msa-tmp-"
NEW_PREFIX = ".msa-new-"  # a scratch folder before its lock is taken: cleaners wait
OWNER = ".owner"
REF = ".ref"
GRACE_S = 60.0  # an unlocked new folder (or one without owner file) is stale after this long


@contextmanager
def scratch_dir(parent: Path, tag: str) -> Iterator[Path]:
    """A new, locked scratch folder under ``parent``; removed on exit (normal or raised).

    It gets its ``PREFIX`` name only once locked (a rename), so a cleaner never sees it
    between its creation and its lock."""
    staging = Path(tempfile.mkdtemp(prefix=f"{NEW_PREFIX}{tag}-", dir=parent))
    fd = os.open(staging / OWNER, os.O_RDWR | os.O_CREAT, 0o600)
    path = None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        path = parent / (PREFIX + staging.name[len(NEW_PREFIX):])
        os.rename(staging, path)
        yield path
    finally:
        remove_owner_last(path or staging)
        os.close(fd)


@contextmanager
def note(space_dir: Path | None, target: Path) -> Iterator[None]:
    """While the block runs, ``space_dir`` holds a reference to the scratch folder ``target``
    (nothing when ``space_dir`` is None, e.g. a read-only space). On exit ``target`` is
    removed *before* the reference: a process killed in between leaves a reference to
    nothing (dropped by the next clean), never a folder that nothing points to."""
    if space_dir is None:
        yield
        return
    ref = space_dir / f"{PREFIX}{target.name}{REF}"
    ref.write_text(str(target.resolve()), encoding="utf-8")
    try:
        yield
    finally:
        remove_owner_last(target)
        ref.unlink(missing_ok=True)


def remove_owner_last(folder: Path) -> None:
    """Remove a scratch folder, its ``.owner`` file last: a process killed part way leaves a
    folder that still has its (now unlocked) owner file, so the next clean removes it at
    once instead of waiting out the grace period of a folder without one."""
    try:
        children = [c for c in folder.iterdir() if c.name != OWNER]
    except OSError:
        return
    for child in children:
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)


def clean_stale(parent: Path) -> int:
    """Remove the scratch folders (and referenced ones) of ``parent`` that no live process
    owns. Returns how many folders were removed. Best effort: a folder it cannot inspect or
    remove (permissions, a read-only file system) is left, never an error."""
    try:
        return _clean(parent)
    except OSError:
        return 0


def _clean(parent: Path) -> int:
    if not parent.is_dir():
        return 0
    removed = 0
    for p in sorted(parent.glob(f"{NEW_PREFIX}*")):
        if p.is_dir() and not p.is_symlink() and time.time() - p.stat().st_mtime > GRACE_S:
            shutil.rmtree(p, ignore_errors=True)  # its creator died before locking it
            removed += 1
    for p in sorted(parent.glob(f"{PREFIX}*")):
        if p.is_file() and p.name.endswith(REF):
            target = Path(p.read_text(encoding="utf-8", errors="replace").strip())
            if target.name.startswith(PREFIX) and _remove_if_stale(target):
                removed += 1
            if not target.exists():
                p.unlink(missing_ok=True)
        elif p.is_dir() and _remove_if_stale(p):
            removed += 1
    return removed


def _remove_if_stale(path: Path) -> bool:
    try:
        return _remove_if_unowned(path)
    except OSError:
        return False


def _remove_if_unowned(path: Path) -> bool:
    if not path.is_dir() or path.is_symlink():
        return False
    owner = path / OWNER
    if not owner.exists():
        if time.time() - path.stat().st_mtime < GRACE_S:
            return False  # not made by scratch_dir; left alone for a while to be safe
        shutil.rmtree(path, ignore_errors=True)
        return True
    fd = os.open(owner, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # a live process holds it
    else:
        shutil.rmtree(path, ignore_errors=True)
        return True
    finally:
        os.close(fd)
