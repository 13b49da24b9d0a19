"""Answer formats that keep a small reader's copies of rare names exact.

A small reader that knows the answer often writes it wrong: a misspelt copy of a rare name
("Kaxboth Lirkteash" for "Kaxbouth Lirkteash"). ``MemoryConfig.answer_format``:

- ``"snap"``: the answer is generated freely, then each capitalised word that the memories
  read do not contain is replaced by their closest capitalised word, when it is close enough
  (:class:`NameSnap`);
- ``"extractive"`` (the default): each generated token must continue a run of consecutive
  tokens of one line of the memories read, so the answer is always a verbatim span of them;
  the model still chooses which span and where it ends (a stop id is allowed once one token
  is copied, and is the only choice when no line continues the run). With the question, a
  span starts only in a line that shares a content word with it, when any line does; when
  another such line (or a line of a memory a later interleave round found) holds a whole
  name that the best of them holds, only those second-hop lines (:class:`CopySpans`);
- ``"free"``: the text as generated.

The benchmark's RAG rows use the same rule with their own texts, so a format is fair to every
system compared.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch

from msa_agent.store.lexical import PARTICLES, STOP_WORDS

_END = -1  # ends a line: no span runs across it
SNAP_CUTOFF = 0.7  # difflib ratio; chosen on the sessions val split (docs/answering.md)
_WORD = re.compile(r"[^\W\d_]+")  # a run of letters


class CopySpans:
    """The state of one extractive answer over ``texts`` (tokenised word by word).

    ``_src`` ``[N]``: every line's tokens (each word as it reads inside a line, with its
    leading space), each line followed by ``_END``; after the line, for each word an answer
    may start at, that word's bare tokens (an answer's first token is "Selthol", inside a
    line the word is " Selthol").
    ``_nxt`` ``[N]``: the position that follows each one: the next, except that a bare
    word's last token continues its line after the word.
    ``_at`` ``[M]``: every place in ``_src`` where the tokens copied so far occur, as the
    position of the token that would continue it (at first: every start, bare or spaced).
    With a ``question``, only the lines about it are kept, or its second hop's
    (:func:`_about`; ``followed``: the indices of ``texts`` that a later round of
    interleave found).

    Built in time linear in the text, each distinct word tokenised once, and cached per
    text: 16 memories of 1,000 tokens take ~0.35 s the first time and 0.1 ms after, where
    tokenising a run from every word took 1.2 s (docs/results/copy-spans-cpu.json).
    """

    def __init__(self, tokenizer: Any, texts: Sequence[str], question: str = "",
                 followed: Collection[int] = ()) -> None:
        pieces = [_text_spans(tokenizer, text) for text in texts]
        if question:
            pieces = _about(pieces, content_words(question), followed)
        offsets = [0]
        for piece in pieces:
            offsets.append(offsets[-1] + len(piece.src))
        self._src = _cat([p.src for p in pieces])
        self._nxt = _cat([p.nxt + off for p, off in zip(pieces, offsets, strict=False)])
        self._at = _cat([p.starts + off for p, off in zip(pieces, offsets, strict=False)])
        self._first = _cat([p.first for p in pieces])  # what _at reads before any copy
        self.copied = 0

    def __bool__(self) -> bool:
        return bool(self._at.numel())

    def allowed(self, stop: Collection[int]) -> torch.Tensor:
        """Token ids that may come next (distinct, ascending): continuations of the run, and
        ``stop`` once a token is copied."""
        return self._candidates(stop).unique()

    def _candidates(self, stop: Collection[int]) -> torch.Tensor:
        """:meth:`allowed` with repeats, unsorted: at the first step one entry per place an
        answer may start (~16k for 16 memories of 1k tokens), where sorting them for
        ``unique`` cost ~1 ms of the first token."""
        nxt = self._src[self._at] if self.copied else self._first
        nxt = nxt[nxt != _END]
        if self.copied:
            nxt = torch.cat([nxt, torch.tensor(sorted(stop), dtype=torch.long)])
        return nxt

    def choose(self, logits: torch.Tensor, stop: Collection[int]) -> int | None:
        """The allowed token with the highest ``logits`` ``[V]`` (the lowest id of those tied,
        as an argmax over :meth:`allowed`), and the run advanced past it; None when nothing
        may follow (the run's line ended and there is no stop id)."""
        candidates = self._candidates(stop)
        if not candidates.numel():
            return None
        scores = logits.float().cpu()[candidates]  # one transfer of the row, then host work
        token = int(candidates[scores == scores.max()].min())
        if token not in stop:
            self._at = self._nxt[self._at[self._src[self._at] == token]]
            self.copied += 1
        return token


@dataclass(frozen=True)
class _Line:
    """Where one line lies in its text's :class:`_Spans`, and the words it holds."""

    region: tuple[int, int]  # its tokens, _END and bare words: src[a:b] (no link leaves it)
    starts: tuple[int, int]  # its slice of starts
    words: frozenset[str]  # content_words of the line
    names: frozenset[tuple[str, ...]] = frozenset()  # the names it holds (_names)


@dataclass(frozen=True)
class _Spans:
    """One text's part of a :class:`CopySpans`, positions counted from its start."""

    src: torch.Tensor
    nxt: torch.Tensor
    starts: torch.Tensor
    first: torch.Tensor  # the first tokens of the starts (an answer's first step)
    lines: tuple[_Line, ...] = ()

    def line(self, line: _Line) -> _Spans:
        """The part of one of its lines alone, positions counted from the line's start. Its
        first tokens keep repeats (``CopySpans.allowed`` takes the distinct ones once): a
        ``unique`` per kept line was most of a warm build's time."""
        (a, b), (s0, s1) = line.region, line.starts
        starts = self.starts[s0:s1] - a
        src = self.src[a:b]
        return _Spans(src, self.nxt[a:b] - a, starts, src[starts])


# words too common to tie a line to a question (what is left are its content words): the
# lexical channel's stop words with the particles it searches for ("up", "out": a line's
# content words are unchanged by that choice), and those a question uses to ask ("tell me")
_STOP = STOP_WORDS | PARTICLES | frozenset(
    "also know may might mine must shall tell us whose yes".split())


def content_words(text: str) -> frozenset[str]:
    """The lowercased words of 3+ letters of ``text`` that are not stop words."""
    return frozenset(w for w in (m.lower() for m in _WORD.findall(text))
                     if len(w) >= 3 and w not in _STOP)


def _names(words: Sequence[str]) -> frozenset[tuple[str, ...]]:
    """The names in one line's ``words`` (split on spaces), in lower case: each run of
    consecutive content words capitalised where no sentence starts (not first, not after
    ".", "!", "?" or a "User:" label), broken at punctuation ("Stexdror Rithgin." gives
    ("stexdror", "rithgin"); "joined Geshdrouth Group as" gives ("geshdrouth", "group"))."""
    runs: list[list[str]] = [[]]
    for prev, word in zip((".", *words), words, strict=False):
        letters = _WORD.findall(word)[:1]
        if (letters and letters[0][0].isupper() and content_words(letters[0])
                and not prev.endswith((".", "!", "?", ":"))):
            runs[-1].append(letters[0].lower())
            if word[-1].isalpha():
                continue
        runs.append([])
    return frozenset(tuple(run) for run in runs if run)


def _about(pieces: list[_Spans], words: frozenset[str],
           followed: Collection[int] = ()) -> list[_Spans]:
    """Only the lines about the question, when any line is: a small reader held to copying
    from any line often starts its span in a line that mentions nothing asked (a quoted
    essay, "Understood, noted."). Those are the lines that share a content word with it,
    or, when the question is a chain, its second hop (:func:`_second_hop`; the lines of
    the ``followed`` pieces, which a later round of interleave found, are candidates for
    it whether or not they share a word with the question)."""
    about = [(p, line) for p in pieces for line in p.lines if line.words & words]
    if not about:
        return pieces
    hops = about + [(p, line) for i in followed for p in pieces[i:i + 1] for line in p.lines
                    if not line.words & words]
    return [p.line(line) for p, line in _second_hop(about, hops, words) or about]


def _second_hop(about: list[tuple[_Spans, _Line]], candidates: list[tuple[_Spans, _Line]],
                words: frozenset[str]) -> list[tuple[_Spans, _Line]]:
    """The ``candidates`` (lines about the question, and those of a later round's
    memories) that hold a whole name that the best lines about it hold (the lines sharing
    the most of its words; the name's words outside the question), other than those best
    lines. "Where is the plumber who fixed our sink going for the holidays?": the best line
    is "The plumber who fixed our sink is Stexdror Rithgin."; the answer is in "Stexdror
    Rithgin is driving back to Kondeashvrour for the holidays.", which a small reader
    passes over for the line that restates the question. A whole name, so "Vrermeath Group"
    is no hop from "Geshdrouth Group". Empty when no line is such a hop (a single-hop
    question)."""
    most = max(len(line.words & words) for _, line in about)
    best = [line for _, line in about if len(line.words & words) == most]
    named = {rest for line in best for name in line.names
             if (rest := frozenset(name) - words)}
    return [(p, line) for p, line in candidates
            if line not in best and any(name <= line.words for name in named)]


@lru_cache(maxsize=2048)
def _text_spans(tokenizer: Any, text: str) -> _Spans:
    """``text``'s lines as :class:`CopySpans` reads them, built once per text: every answer
    that reads a memory again (a hot memory, a stream of questions) reuses it."""
    lines = [words for words in (line.split() for line in text.splitlines()) if words]
    bare, spaced = _word_ids(tokenizer, {w for words in lines for w in words})
    src: list[int] = []
    nxt: list[int] = []
    starts: list[int] = []
    table: list[tuple[int, int, frozenset[str], frozenset[tuple[str, ...]]]] = []
    for words in lines:
        table.append((len(src), len(starts), content_words(" ".join(words)), _names(words)))
        at = [len(src)]  # where each word's tokens start; then where the line ends
        for w in words:
            src += spaced[w]
            at.append(len(src))
        src.append(_END)
        nxt += range(at[0] + 1, len(src) + 1)
        for i, w in enumerate(words):
            if not _opens(w) or at[i] == at[i + 1]:
                continue
            starts.append(at[i])  # spaced, as after an "Answer:" prompt
            if bare[w]:
                starts.append(len(src))
                src += bare[w]
                nxt += [*range(starts[-1] + 1, len(src)), at[i + 1]]
    src_t, nxt_t, starts_t = (torch.tensor(x, dtype=torch.long) for x in (src, nxt, starts))
    ends = [(a, s0) for a, s0, *_ in table[1:]] + [(len(src), len(starts))] * bool(table)
    table_lines = tuple(_Line((a, b), (s0, s1), words, names)
                        for (a, s0, words, names), (b, s1) in zip(table, ends, strict=True))
    return _Spans(src_t, nxt_t, starts_t, src_t[starts_t].unique(), table_lines)


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)


def _word_ids(tokenizer: Any, words: set[str]) -> tuple[dict[str, list[int]],
                                                         dict[str, list[int]]]:
    """Each word's token ids bare and with a leading space, in two batched calls."""
    vocab = sorted(words)
    if not vocab:
        return {}, {}
    bare = tokenizer(vocab, add_special_tokens=False)["input_ids"]
    spaced = tokenizer([" " + w for w in vocab], add_special_tokens=False)["input_ids"]
    return dict(zip(vocab, bare, strict=True)), dict(zip(vocab, spaced, strict=True))


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


def decoding(tokenizer: Any, answer_format: str, shown: Sequence[str],
             question: str = "", followed: Collection[int] = ()) -> Decoding:
    """The :class:`Decoding` of one answer to ``question`` whose reader was shown ``shown``
    (``followed``: the indices in ``shown`` of memories a later round of interleave found)."""
    return Decoding(copy_spans(tokenizer, answer_format, shown, question, followed),
                    answer_fix(answer_format, shown))


def answer_fix(answer_format: str, shown: Sequence[str]) -> Callable[[str], str]:
    """What turns the generated text into the answer: a :class:`NameSnap` over ``shown`` for
    ``"snap"``, the text as it is otherwise."""
    return NameSnap(shown) if answer_format == "snap" and shown else _same


def copy_spans(tokenizer: Any, answer_format: str, texts: Sequence[str],
               question: str = "", followed: Collection[int] = ()) -> CopySpans | None:
    """The constraint for ``answer_format`` over ``texts`` (the lines about ``question``):
    None for free answers, or when there is nothing to copy from (an answer without
    memories stays free)."""
    if answer_format != "extractive":
        return None
    spans = CopySpans(tokenizer, texts, question, followed)
    return spans if spans else None
