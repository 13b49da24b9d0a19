"""Answer formats that keep a small reader's copies of rare names exact.

A small reader that knows the answer often writes it wrong: a misspelt copy of a rare name
("Kaxboth Lirkteash" for "Kaxbouth Lirkteash"). ``MemoryConfig.answer_format``:

- ``"snap"``: the answer is generated freely, then each capitalised word that the memories
  read do not contain is replaced by their closest capitalised word, when it is close enough
  (:class:`NameSnap`);
- ``"extractive"``: each generated token must continue a run of consecutive tokens of one
  line of the memories read, so the answer is always a verbatim span of them; the model
  still chooses which span and where it ends (a stop id is allowed once one token is
  copied, and is the only choice when no line continues the run) (:class:`CopySpans`).

The benchmark's RAG rows use the same rule with their own texts, so a format is fair to every
system compared.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import torch

_END = -1  # between runs: no span runs across it
SNAP_CUTOFF = 0.7  # difflib ratio; chosen on the sessions val split (docs/answering.md)
_WORD = re.compile(r"[^\W\d_]+")  # a run of letters
SPAN_WORDS = 24  # the longest answer, in words (answers are a few words; 32 tokens at most)


class CopySpans:
    """The state of one extractive answer over ``texts`` (tokenised line by line).

    ``_src`` ``[N]``: the token ids of every run of words of every line (each run starts at
    a word, up to ``SPAN_WORDS`` words), each followed by ``_END``.
    ``_at`` ``[M]``: for every place in ``_src`` where the tokens copied so far occur, the
    position of the token that would continue it (at first: every run's start).
    """

    def __init__(self, tokenizer: Any, texts: Sequence[str]) -> None:
        ids: list[int] = []
        starts: list[int] = []
        for piece in _word_starts(texts):
            for lead in ("", " "):  # bare, or spaced as after an "Answer:" prompt
                run = tokenizer(lead + piece, add_special_tokens=False)["input_ids"]
                starts += [len(ids)] if run else []
                ids += run + [_END]
        self._src = torch.tensor(ids, dtype=torch.long)
        self._at = torch.tensor(starts, dtype=torch.long)  # an answer starts a run
        self.copied = 0

    def __bool__(self) -> bool:
        return bool(self._at.numel())

    def allowed(self, stop: Collection[int]) -> torch.Tensor:
        """Token ids that may come next: continuations of the run, and ``stop`` once a token
        is copied."""
        nxt = self._src[self._at].unique()
        nxt = nxt[nxt != _END]
        if self.copied:
            nxt = torch.cat([nxt, torch.tensor(sorted(stop), dtype=torch.long)])
        return nxt

    def choose(self, logits: torch.Tensor, stop: Collection[int]) -> int | None:
        """The allowed token with the highest ``logits`` ``[V]``, and the run advanced past
        it; None when nothing may follow (the run's line ended and there is no stop id)."""
        allowed = self.allowed(stop)
        if not allowed.numel():
            return None
        token = int(allowed[logits[allowed.to(logits.device)].argmax()])
        if token not in stop:
            self._at = self._at[self._src[self._at] == token] + 1
            self.copied += 1
        return token


def _word_starts(texts: Sequence[str], words: int = SPAN_WORDS) -> list[str]:
    """Every line of ``texts`` cut at each word start into runs of up to ``words`` words.

    A name inside a line is tokenised with its leading space (" Selthol"), but an answer
    starts with the bare word ("Selthol"), a different token: a run that starts at each word
    lets the answer's first token be the bare one, as a free answer's would be. Runs start
    only where an answer can (:func:`_opens`).
    """
    out = []
    for text in texts:
        for line in text.splitlines():
            split = line.split()
            out += [" ".join(split[i:i + words]) for i in range(len(split)) if _opens(split[i])]
    return out


def _opens(word: str) -> bool:
    """Whether an answer may start at ``word``: not at a speaker's label ("User:") or at a
    word without letters (a date "(2025-02-01)", a list number "[2]"); both stay copyable
    inside a run that starts earlier."""
    return any(c.isalpha() for c in word) and not word.endswith(":")


class NameSnap:
    """Replaces each capitalised word (4+ letters) of an answer that ``shown`` lacks by the
    closest capitalised word of ``shown`` (difflib ratio at least ``cutoff``; otherwise
    kept). Word by word, so a prefix that ends between words snaps as it would in the
    whole answer (a stream can show it before the answer ends)."""

    def __init__(self, shown: Sequence[str], cutoff: float = SNAP_CUTOFF) -> None:
        self._names = sorted({w for t in shown for w in _WORD.findall(t) if _is_name(w)})
        self._known = set(self._names)
        self._cutoff = cutoff
        self._seen: dict[str, str] = {}

    def __call__(self, answer: str) -> str:
        return _WORD.sub(self._fix, answer)

    def _fix(self, m: re.Match[str]) -> str:
        w = m.group(0)
        if w in self._known or not _is_name(w):
            return w
        if w not in self._seen:
            close = difflib.get_close_matches(w, self._names, 1, self._cutoff)
            self._seen[w] = close[0] if close else w
        return self._seen[w]


def _is_name(word: str) -> bool:
    return len(word) >= 4 and word[0].isupper()


def _same(text: str) -> str:
    return text


@dataclass(frozen=True)
class Decoding:
    """How one answer is decoded under ``MemoryConfig.answer_format``: the extractive
    constraint for generation (None: free) and what turns the generated text into the
    answer (identity unless ``"snap"``). The one place that reads the format."""

    copy: CopySpans | None = None
    fix: Callable[[str], str] = _same


def decoding(tokenizer: Any, answer_format: str, shown: Sequence[str]) -> Decoding:
    """The :class:`Decoding` of one answer whose reader was shown ``shown``."""
    return Decoding(copy_spans(tokenizer, answer_format, shown), answer_fix(answer_format, shown))


def answer_fix(answer_format: str, shown: Sequence[str]) -> Callable[[str], str]:
    """What turns the generated text into the answer: a :class:`NameSnap` over ``shown`` for
    ``"snap"``, the text as it is otherwise."""
    return NameSnap(shown) if answer_format == "snap" and shown else _same


def copy_spans(tokenizer: Any, answer_format: str, texts: Sequence[str]) -> CopySpans | None:
    """The constraint for ``answer_format`` over ``texts``: None for free answers, or when
    there is nothing to copy from (an answer without memories stays free)."""
    if answer_format != "extractive":
        return None
    spans = CopySpans(tokenizer, texts)
    return spans if spans else None
