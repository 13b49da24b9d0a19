"""Where a remote space lives: a PostgreSQL database for its metadata and an fsspec URL for its
arrays (docs/store.md, "Remote storage"). Plain values only: the store never sees a config."""

from __future__ import annotations

import hashlib
import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import MissingDependencyError, StoreInputError

REMOTE_EXTRA = 'pip install "msa-agent[remote]"'
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_RESERVED = ("public", "information_schema")
LOCK_CLASS = 0x4D5341  # "MSA": the first key of every space's advisory lock


def require(module: str, what: str) -> Any:
    """Import an optional dependency, or raise ``MissingDependencyError`` naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(
            f"{what} needs the Python package {module!r}, which is not installed; "
            f"install the remote extra: {REMOTE_EXTRA}") from None


@dataclass(frozen=True, repr=False)
class RemoteLocation:
    """A space with its metadata in PostgreSQL and its arrays at an fsspec URL.

    ``meta_url``: a SQLAlchemy URL, ``postgresql+psycopg://user:password@host:5432/db``
    (plain ``postgresql://`` means the same driver). ``arrays_url``: the folder of the space's
    arrays, e.g. ``s3://bucket/spaces/agent1`` or ``file:///shared/agent1``.
    ``name``: the space's PostgreSQL schema, so several spaces share one database (lowercase
    letters, digits and ``_``; not ``public`` or ``pg_*``). ``storage_options``: fsspec options
    of ``arrays_url`` (``endpoint_url``, ``key``, ``secret``...), never stored in the space.
    """

    meta_url: str
    arrays_url: str
    name: str = "msa_space"
    storage_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name) \
                or self.name in _RESERVED or self.name.startswith("pg_"):
            raise StoreInputError(
                f"space name must be 1-63 lowercase letters, digits or '_' (not starting with a "
                f"digit, not 'public' or 'pg_*'): it names a PostgreSQL schema; got {self.name!r}")
        if not isinstance(self.arrays_url, str) or not self.arrays_url.strip():
            raise StoreInputError(f"arrays_url must be a non-empty URL, got {self.arrays_url!r}")
        if not isinstance(self.storage_options, Mapping):
            raise StoreInputError("storage_options must be a mapping of fsspec options")
        object.__setattr__(self, "storage_options", dict(self.storage_options))
        self.sql_url()  # refuses a bad or non-PostgreSQL URL now, before anything connects

    def sql_url(self) -> Any:
        """``meta_url`` as a SQLAlchemy ``URL`` for the psycopg (3) driver."""
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        if not isinstance(self.meta_url, str):
            raise StoreInputError(f"meta_url must be a str, got {type(self.meta_url).__name__}")
        try:
            url = make_url(self.meta_url)
        except ArgumentError:
            raise StoreInputError(f"meta_url is not a SQLAlchemy URL: {self.meta_url!r}"
                                  ) from None
        if url.get_backend_name() != "postgresql" or url.get_driver_name() not in (
                "psycopg", "psycopg2"):
            raise StoreInputError(
                f"meta_url scheme {url.drivername!r} is not supported: a remote space keeps its "
                "metadata in PostgreSQL (postgresql+psycopg://user@host:5432/db); a local "
                "space (a folder path) keeps it in SQLite")
        return url.set(drivername="postgresql+psycopg")

    @property
    def lock_key(self) -> tuple[int, int]:
        """The two int4 keys of this space's session-level advisory lock (per database)."""
        digest = hashlib.sha256(f"msa-agent space {self.name}".encode()).digest()
        return LOCK_CLASS, int.from_bytes(digest[:4], "big") & 0x7FFFFFFF

    def __str__(self) -> str:
        masked = self.sql_url().render_as_string(hide_password=True)
        return f"{masked}#{self.name} (arrays {self.arrays_url})"

    def __repr__(self) -> str:  # no password, no storage option values (they hold secrets)
        return (f"RemoteLocation({str(self)!r}, storage_options="
                f"{sorted(self.storage_options)})")
