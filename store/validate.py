"""Input checks for ``Space.add`` and friends. Everything is checked before anything is written."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from .errors import FingerprintMismatchError, StoreInputError
from .types import ArraySpec, NewMemory, StoredMemory, Unit

MAX_METADATA_BYTES = 64 * 1024  # one memory's metadata, serialised as UTF-8 JSON
MAX_METADATA_DEPTH = 32  # nested dicts/lists
INT64 = (-(2**63), 2**63 - 1)  # what SQLite's JSON functions and columns hold exactly


def json_normal(value: Any, what: str) -> Any:
    """``value`` after a JSON round trip (tuples -> lists); ValueError if not JSON-able."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise StoreInputError(f"{what} must be JSON-serialisable: {e}") from None


def check_text(value: str, what: str) -> None:
    """``value`` encodes as UTF-8 (a lone surrogate would be stored, then break every read)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise StoreInputError(f"{what} is not valid Unicode text ({e.reason} at "
                              f"position {e.start})") from None


def check_scalar(value: Any, what: str) -> None:
    """A JSON scalar SQLite stores exactly: UTF-8 text, a 64-bit int, a finite float."""
    if isinstance(value, str):
        check_text(value, what)
    elif isinstance(value, int | np.integer) and not isinstance(value, bool):
        if not INT64[0] <= value <= INT64[1]:
            raise StoreInputError(f"{what}: int {value} is outside the 64-bit range")
    elif isinstance(value, float | np.floating) and not np.isfinite(value):
        raise StoreInputError(f"{what}: {value} is not a finite number")


def check_json_tree(value: Any, what: str, depth: int = 0) -> None:
    """Metadata checks before serialising: depth <= ``MAX_METADATA_DEPTH``, str keys, scalars
    as ``check_scalar`` (iterative in depth only up to the cap, so no RecursionError)."""
    if depth > MAX_METADATA_DEPTH:
        raise StoreInputError(f"{what} is nested deeper than {MAX_METADATA_DEPTH} levels")
    if isinstance(value, Mapping):
        for k, item in value.items():
            if not isinstance(k, str):
                raise StoreInputError(f"{what} keys must be str, got {k!r}")
            check_text(k, f"{what} key {k!r}")
            check_json_tree(item, f"{what}[{k!r}]", depth + 1)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            check_json_tree(item, f"{what}[{i}]", depth + 1)
    else:
        check_scalar(value, what)


def check_metadata(value: Any, what: str) -> dict[str, Any]:
    """``value`` as stored: a dict of str keys, bounded depth and size, valid text and
    numbers; returns its JSON round trip."""
    if not isinstance(value, dict):
        raise StoreInputError(f"{what} must be a dict with str keys")
    check_json_tree(value, what)
    out = json_normal(value, what)
    size = len(json.dumps(out, ensure_ascii=False).encode("utf-8"))
    if size > MAX_METADATA_BYTES:
        raise StoreInputError(f"{what} is {size:,} bytes as JSON; the limit is "
                              f"{MAX_METADATA_BYTES:,}")
    return out


def _check_int(value: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise StoreInputError(f"{what} must be a non-negative int, got {value!r}")


def _check_opt_str(value: Any, what: str) -> None:
    if value is not None and not isinstance(value, str):
        raise StoreInputError(f"{what} must be a str or None, got {type(value).__name__}")
    if value is not None:
        check_text(value, what)


def check_memory(m: Any, i: int) -> None:
    """Field checks of one ``NewMemory``."""
    if not isinstance(m, NewMemory):
        raise StoreInputError(f"memories[{i}] must be a NewMemory, got {type(m).__name__}")
    if not isinstance(m.text, str):
        raise StoreInputError(f"memories[{i}].text must be a str")
    check_text(m.text, f"memories[{i}].text")
    for name in ("namespace", "kind"):
        value = getattr(m, name)
        if not isinstance(value, str) or not value:
            raise StoreInputError(f"memories[{i}].{name} must be a non-empty str")
        check_text(value, f"memories[{i}].{name}")
    if m.id is not None and (not isinstance(m.id, str) or not 0 < len(m.id) <= 64):
        raise StoreInputError(f"memories[{i}].id must be None or a str of 1..64 characters")
    if m.key is not None and (not isinstance(m.key, str) or not 0 < len(m.key) <= 255):
        raise StoreInputError(f"memories[{i}].key must be None or a str of 1..255 characters")
    for name in ("id", "session_id", "user_id", "agent_id", "source_id", "key"):
        _check_opt_str(getattr(m, name), f"memories[{i}].{name}")
    for name in ("part", "n_tokens", "n_chunks"):
        _check_int(getattr(m, name), f"memories[{i}].{name}")
    check_metadata(m.metadata, f"memories[{i}].metadata")
    if m.created_at is not None and not isinstance(m.created_at, datetime):
        raise StoreInputError(f"memories[{i}].created_at must be a datetime or None")


def rows_for(m: NewMemory | StoredMemory, unit: Unit) -> int:
    return m.n_chunks if unit == "chunk" else m.n_tokens


def check_rows(spec: ArraySpec, arr: Any, n_rows: int, what: str) -> None:
    """``arr`` is an ndarray of ``spec.dtype`` shaped ``(n_rows, *spec.row_shape)``."""
    if not isinstance(arr, np.ndarray):
        raise StoreInputError(f"{what} must be a numpy array, got {type(arr).__name__}")
    if arr.dtype != np.dtype(spec.dtype):
        raise StoreInputError(f"{what}: dtype {arr.dtype}, space stores {spec.dtype}")
    want = (n_rows, *spec.row_shape)
    if arr.shape != want:
        raise StoreInputError(f"{what}: shape {arr.shape}, expected {want} "
                         f"(n_{spec.unit}s={n_rows}, row_shape={spec.row_shape})")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise StoreInputError(f"{what} holds NaN or infinite values")


def check_batch(memories: Sequence[NewMemory], data: Sequence[Mapping[str, np.ndarray]],
                specs: Mapping[str, ArraySpec]) -> None:
    """Validate a whole ``add`` batch; raises ValueError naming the first problem."""
    if isinstance(memories, NewMemory) or len(memories) != len(data):
        raise StoreInputError("memories and data must be sequences of equal length")
    for i, (m, d) in enumerate(zip(memories, data, strict=True)):
        check_memory(m, i)
        if not isinstance(d, Mapping):
            raise StoreInputError(f"data[{i}] must be a mapping of array name -> ndarray")
        if set(d) != set(specs):
            raise StoreInputError(
                f"data[{i}] has arrays {sorted(d)}, space declares {sorted(specs)}")
        for name, spec in specs.items():
            check_rows(spec, d[name], rows_for(m, spec.unit), f"data[{i}][{name!r}]")


def check_specs(arrays: Sequence[ArraySpec]) -> list[ArraySpec]:
    specs = list(arrays)
    if not all(isinstance(s, ArraySpec) for s in specs):
        raise StoreInputError("arrays must be ArraySpec instances")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise StoreInputError(f"duplicate array names in {names}")
    return specs


def fingerprint_diff(stored: Any, given: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two (JSON-normalised) fingerprints."""
    if isinstance(stored, dict) and isinstance(given, dict):
        out: list[str] = []
        for k in sorted(set(stored) | set(given)):
            key = f"{prefix}{k}"
            if k not in stored or k not in given:
                out.append(key)
            else:
                out.extend(fingerprint_diff(stored[k], given[k], key + "."))
        return out
    return [] if stored == given else [prefix.rstrip(".") or "<root>"]


def describe_diff(stored: dict[str, Any], given: dict[str, Any], keys: list[str]) -> str:
    """One line per differing key: ``key: stored=... given=...``."""
    def dig(d: Any, key: str) -> Any:
        for part in key.split("."):
            if not isinstance(d, dict) or part not in d:
                return "<missing>"
            d = d[part]
        return d
    return "\n".join(f"  {k}: stored={dig(stored, k)!r} given={dig(given, k)!r}" for k in keys)


def check_fingerprint(path: Path, stored: dict[str, Any], given: dict[str, Any]) -> None:
    """Raise ``FingerprintMismatchError`` naming every differing key."""
    given = json_normal(given, "fingerprint")
    keys = fingerprint_diff(stored, given)
    if keys:
        raise FingerprintMismatchError(
            f"space {path} was made with a different fingerprint; differing keys: "
            f"{', '.join(keys)}\n{describe_diff(stored, given, keys)}", keys)
