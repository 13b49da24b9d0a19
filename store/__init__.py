"""msa_agent.store: persistent spaces of encoded memories (SQL metadata + Zarr v3 arrays).

Local by default (SQLite + a Zarr folder); remote with ``RemoteLocation`` (PostgreSQL +
an fsspec URL such as ``s3://``).

numpy in, numpy out; knows nothing about models. See docs/store.md.
"""

from .errors import (
    FingerprintMismatchError,
    FTS5UnavailableError,
    InvalidQueryError,
    MissingDependencyError,
    SpaceBusyError,
    SpaceExistsError,
    SpaceLockedError,
    SpaceNotFoundError,
    SpaceReadOnlyError,
    StoreCorruptedError,
    StoreError,
    StoreInputError,
    StoreUnavailableError,
)
from .location import RemoteLocation
from .space import Space
from .types import ArraySpec, HistoryEvent, NewMemory, StoredMemory

__all__ = [
    "ArraySpec", "HistoryEvent", "NewMemory", "StoredMemory", "Space",
    "StoreError", "StoreInputError", "SpaceNotFoundError", "SpaceExistsError", "SpaceLockedError",
    "SpaceReadOnlyError", "SpaceBusyError", "FingerprintMismatchError", "StoreCorruptedError",
    "InvalidQueryError", "FTS5UnavailableError", "StoreUnavailableError", "MissingDependencyError",
    "RemoteLocation",
]
