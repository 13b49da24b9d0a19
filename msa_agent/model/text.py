"""Text to token ids: validation, the tokenizer's own prefix (BOS), bounded-length documents."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from msa_agent.errors import InvalidInputError


@dataclass(frozen=True)
class Piece:
    """One document cut from a text: its exact character span and its token ids (prefix added)."""

    text: str
    ids: list[int]
    part: int


# Longest text taken in one call (characters). The whole text is tokenised and encoded before
# the one atomic write, so memory grows with it: ~4M characters is ~1M tokens, whose pooled
# arrays alone are ~0.6 GB in float32 on SmolLM2 (40x that with keep_full_kv). Split longer
# input yourself (e.g. per chapter) and pass the parts to ``remember_many``.
MAX_TEXT_CHARS = 4_000_000


def check_text(text: object, what: str = "text") -> str:
    """Return ``text`` if it is a non-empty, printable, UTF-8-encodable str of at most
    ``MAX_TEXT_CHARS`` characters; else raise InvalidInputError (before any work is done)."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        raise InvalidInputError(f"{what} must be str, got {type(text).__name__}: decode it first")
    if not isinstance(text, str):
        raise InvalidInputError(f"{what} must be str, got {type(text).__name__}")
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidInputError(f"{what} has {len(text):,} characters, more than the "
                                f"{MAX_TEXT_CHARS:,} taken at once: split it into parts")
    if not text.strip():
        raise InvalidInputError(f"{what} is empty")
    if "\x00" in text or _control_ratio(text) > 0.1:
        raise InvalidInputError(f"{what} looks binary (NUL or many control characters)")
    check_encodable(text, what)
    return text


def check_label(value: object, what: str) -> str:
    """Return ``value`` if it is a str that encodes as UTF-8 (an id, a namespace, a kind...);
    else raise InvalidInputError."""
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a string, got {type(value).__name__}")
    check_encodable(value, what)
    return value


def check_encodable(value: object, what: str) -> None:
    """Every str in ``value`` (a str, or mappings and lists of them, keys included) encodes
    as UTF-8: a lone surrogate (e.g. from a bad decode) would fail deep in the store."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidInputError(f"{what} is not valid Unicode (character {exc.start}: "
                                    f"{value[exc.start]!r}); decode its source with "
                                    "errors='replace'") from None
    elif isinstance(value, Mapping):
        for k, v in value.items():
            check_encodable(k, f"{what} key")
            check_encodable(v, f"{what}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for v in value:
            check_encodable(v, what)


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


# PromptEOL's template (Jiang et al. 2023): the state at its last token sums the text up in a
# frozen causal LM. A memory's and a question's summary vectors read it (docs/routing.md,
# "A summary token"); the prefix is what makes it work there (suffix-only templates were far
# worse on validation).
SUMMARY_PREFIX, SUMMARY_SUFFIX = 'This text : "', '" means in one word:"'


def summary_ids(tokenizer: Any, ids: list[int]) -> list[int]:
    """``ids`` (a document's or a query's, the tokenizer's special prefix first if it has
    one) inside the summary template: prefix + PREFIX + text + SUFFIX. The pieces are
    tokenised apart, so a text's own ids are the ones it is stored with."""
    lead = special_prefix(tokenizer)
    body = ids[len(lead):] if ids[:len(lead)] == lead else ids
    pre = tokenizer(SUMMARY_PREFIX, add_special_tokens=False)["input_ids"]
    post = tokenizer(SUMMARY_SUFFIX, add_special_tokens=False)["input_ids"]
    return [*lead, *pre, *body, *post]
