"""Text to token ids: validation, the tokenizer's own prefix (BOS), bounded-length documents."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from msa_agent.errors import InvalidInputError


@dataclass(frozen=True)
class Piece:
    """One document cut from a text: its exact character span and its token ids (prefix added)."""

    text: str
    ids: list[int]
    part: int


def check_text(text: object, what: str = "text") -> str:
    """Return ``text`` if it is non-empty, printable str; else raise InvalidInputError."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        raise InvalidInputError(f"{what} must be str, got {type(text).__name__}: decode it first")
    if not isinstance(text, str):
        raise InvalidInputError(f"{what} must be str, got {type(text).__name__}")
    if not text.strip():
        raise InvalidInputError(f"{what} is empty")
    if "\x00" in text or _control_ratio(text) > 0.1:
        raise InvalidInputError(f"{what} looks binary (NUL or many control characters)")
    return text


def _control_ratio(text: str) -> float:
    sample = text[:65536]
    ctrl = sum(1 for c in sample if ord(c) < 32 and c not in "\n\r\t\f\v")
    return ctrl / len(sample)


def special_prefix(tokenizer: Any) -> list[int]:
    """Ids the tokenizer puts before text by default (e.g. Gemma's BOS); often empty."""
    plain = tokenizer("x", add_special_tokens=False)["input_ids"]
    full = tokenizer("x", add_special_tokens=True)["input_ids"]
    n = len(full) - len(plain)
    return list(full[:n]) if n > 0 and full[n:] == plain else []


def split_text(tokenizer: Any, text: str, max_tokens: int) -> list[Piece]:
    """Cut ``text`` into documents of at most ``max_tokens`` tokens (prefix included).

    Pieces cover the text contiguously: joined, they give the text back.
    """
    prefix = special_prefix(tokenizer)
    room = max_tokens - len(prefix)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    if not ids:
        raise InvalidInputError("text produced no tokens")
    pieces = []
    for part, start in enumerate(range(0, len(ids), room)):
        stop = min(start + room, len(ids))
        lo = 0 if start == 0 else offsets[start][0]
        hi = len(text) if stop == len(ids) else offsets[stop][0]
        pieces.append(Piece(text[lo:hi], prefix + list(ids[start:stop]), part))
    return pieces


def query_ids(tokenizer: Any, text: str, max_tokens: int) -> list[int]:
    """Token ids of a query (prefix added), truncated to ``max_tokens``."""
    ids = special_prefix(tokenizer) + tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids[:max_tokens]
