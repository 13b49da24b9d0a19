"""msa_agent.store: persistent spaces of encoded memories (SQLite metadata + Zarr v3 arrays).

numpy in, numpy out; knows nothing about models. See docs/store.md.
"""

from .errors import (
    FingerprintMismatchError,
    FTS5UnavailableError,
    InvalidQueryError,
    SpaceBusyError,
    SpaceExistsError,
    SpaceLockedError,
    SpaceNotFoundError,
    SpaceReadOnlyError,
    StoreCorruptedError,
    StoreError,
    StoreInputError,
)
from .space import Space
from .types import ArraySpec, HistoryEvent, NewMemory, StoredMemory

__all__ = [
    "ArraySpec", "HistoryEvent", "NewMemory", "StoredMemory", "Space",
    "StoreError", "StoreInputError", "SpaceNotFoundError", "SpaceExistsError", "SpaceLockedError",
    "SpaceReadOnlyError", "SpaceBusyError", "FingerprintMismatchError", "StoreCorruptedError",
    "InvalidQueryError", "FTS5UnavailableError",
]
