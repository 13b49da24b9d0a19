"""Domain types of the store: plain frozen dataclasses, no ORM, no pydantic."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np

from .errors import StoreInputError

Unit = Literal["chunk", "token"]
Codec = Literal["lz4", "zstd", "none"]
SUPPORTED_DTYPES = ("float16", "float32")
CODECS = ("lz4", "zstd", "none")


@dataclass(frozen=True)
class ArraySpec:
    """One array of a space: ``unit`` rows per memory, each of shape ``row_shape``.

    ``rows_per_chunk`` is the zarr chunk length along axis 0; ``None`` picks a size
    of about 512 KiB uncompressed. ``codec`` is the Blosc compressor (byte shuffle) or
    "none" (see docs/store.md for the measurements behind the defaults).
    """

    name: str
    unit: Unit
    row_shape: tuple[int, ...]
    dtype: str = "float16"
    rows_per_chunk: int | None = None
    codec: Codec = "lz4"

    def __post_init__(self) -> None:
        object.__setattr__(self, "row_shape", tuple(int(d) for d in self.row_shape))
        if not self.name.isidentifier():
            raise StoreInputError(f"array name must be an identifier, got {self.name!r}")
        if self.unit not in ("chunk", "token"):
            raise StoreInputError(f"unit must be 'chunk' or 'token', got {self.unit!r}")
        if self.dtype not in SUPPORTED_DTYPES:
            raise StoreInputError(f"dtype must be one of {SUPPORTED_DTYPES}, got {self.dtype!r}")
        if any(d <= 0 for d in self.row_shape):
            raise StoreInputError(f"row_shape must be positive, got {self.row_shape}")
        if self.rows_per_chunk is not None and self.rows_per_chunk <= 0:
            raise StoreInputError("rows_per_chunk must be positive")
        if self.codec not in CODECS:
            raise StoreInputError(f"codec must be one of {CODECS}, got {self.codec!r}")

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.row_shape)) * np.dtype(self.dtype).itemsize

    @property
    def chunk_rows(self) -> int:
        """Rows per zarr chunk: the explicit value or the largest power of two <= 512 KiB."""
        if self.rows_per_chunk is not None:
            return self.rows_per_chunk
        rows = max(1, (512 * 1024) // self.row_bytes)
        return 1 << (rows.bit_length() - 1)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "unit": self.unit, "row_shape": list(self.row_shape),
                "dtype": self.dtype, "rows_per_chunk": self.chunk_rows, "codec": self.codec}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ArraySpec:
        return cls(d["name"], d["unit"], tuple(d["row_shape"]), d["dtype"], d["rows_per_chunk"],
                   d.get("codec", "lz4"))

    def same_layout(self, other: ArraySpec) -> bool:
        """Equal name, unit, row shape and dtype (chunking may differ)."""
        return (self.name, self.unit, self.row_shape, self.dtype) == (
            other.name, other.unit, other.row_shape, other.dtype)


@dataclass(frozen=True)
class NewMemory:
    """What the caller supplies per memory; its arrays travel alongside in ``Space.add``."""

    text: str
    namespace: str = "default"
    kind: str = "document"
    metadata: dict[str, Any] = field(default_factory=dict)
    session_id: str | None = None
    user_id: str | None = None
    agent_id: str | None = None
    source_id: str | None = None
    part: int = 0
    n_tokens: int = 0
    n_chunks: int = 0
    created_at: datetime | None = None
    id: str | None = None  # pre-assigned id (e.g. to link parts via source_id); None = new uuid4
    key: str | None = None  # a caller's key for the whole source (read on part 0; see Space.add)
    expires_at: datetime | None = None  # recall stops seeing it then; compaction removes it


@dataclass(frozen=True)
class StoredMemory:
    """A committed memory: its metadata and where its rows live in each array."""

    id: str
    namespace: str
    kind: str
    text: str
    metadata: dict[str, Any]
    session_id: str | None
    user_id: str | None
    agent_id: str | None
    source_id: str | None
    part: int
    created_at: datetime
    token_start: int
    n_tokens: int
    chunk_start: int
    n_chunks: int
    content_hash: str
    expires_at: datetime | None = None  # aware UTC; None = never

    def rows(self, unit: Unit) -> tuple[int, int]:
        """``(start, stop)`` of this memory's rows in arrays of ``unit``."""
        if unit == "chunk":
            return self.chunk_start, self.chunk_start + self.n_chunks
        return self.token_start, self.token_start + self.n_tokens


@dataclass(frozen=True)
class HistoryEvent:
    """One change of a source (a memory and its other parts), as ``Space.history`` gives it.

    Text is never kept, only its sha256 and length, so a forgotten memory's history holds
    none of its words; metadata key names are blanked when the source is forgotten.
    """

    memory_id: str  # the source's id (its first part's)
    namespace: str
    event: str  # "add", "update" or "forget"
    at: datetime  # aware UTC
    text_hash: str | None  # sha256 of the whole text after the event (None after a forget)
    text_chars: int | None
    parts: int  # parts after the event (before it, for a forget)
    old_text_hash: str | None  # before the event (update, forget)
    old_text_chars: int | None
    metadata_keys: list[str] | None  # keys after the event; None once forgotten
    changed: list[str]  # an update's changed fields: "text", "metadata", "kind", ...
