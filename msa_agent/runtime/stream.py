"""Token streaming for ``Memory.answer``: an iterable of text pieces that ends with an Answer.

A *source* produces the generated token ids and, once exhausted, describes what was read:

- :class:`ReadOnce`: one read of the routed memories (``text``, ``full``, or ``pooled``
  with each layer's own selection), then greedy generation;
- :class:`GenerativeSource`: the paper's generative interleave for MSA-trained models
  (``msa_agent.runtime.generative``), several rounds in one stream.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from msa_agent.runtime.answer import MemorySource, Reader, stop_ids
from msa_agent.runtime.extract import Decoding
from msa_agent.runtime.generate import greedy
from msa_agent.runtime.generative import (
    GenerativeState,
    IdProtocol,
    SelectPerLayer,
    generative_rounds,
)
from msa_agent.runtime.results import Recalled, recall_hit
from msa_agent.store import StoredMemory
from msa_agent.types import Answer, AnswerRound


class Runtime(MemorySource, Protocol):
    """What a token source needs of the engine: readers' needs plus its lock."""

    lock: AbstractContextManager[Any]


class TokenSource(Protocol):
    read: str
    prompt_tokens: int
    memory_tokens: int

    def tokens(self) -> Iterator[int]: ...

    def fix(self, generated: str) -> str:
        """The generated text as the answer shows it (word by word: a prefix that ends
        between words is fixed as in the whole text)."""
        ...

    def text(self, generated: str) -> str: ...

    def rounds(self) -> list[AnswerRound]: ...


class ReadOnce:
    """Route once (or with routing-driven rounds), read, generate."""

    def __init__(self, engine: Runtime, reader: Reader, hits: Sequence[Recalled], max_new: int,
                 per_layer: Mapping[int, Sequence[StoredMemory]] | None = None,
                 how: Decoding | None = None) -> None:
        """``how``: the answer format's decoding over what the reader was shown (free)."""
        self._engine, self._reader, self._hits, self._max_new = engine, reader, hits, max_new
        self._how = how or Decoding()
        self._per_layer = {layer: [m.id for m in sel] for layer, sel in (per_layer or {}).items()}
        self.read, self.memory_tokens = reader.read, reader.memory_tokens
        self.prompt_tokens = len(reader.prompt)

    def tokens(self) -> Iterator[int]:
        model, r = self._engine.lm.model, self._reader
        stop = stop_ids(model, self._engine.tokenizer)
        return after_first(greedy(model, r.prompt, self._max_new, stop, r.memory, r.start,
                                  self._how.copy), r.prefetch_next)

    def fix(self, generated: str) -> str:
        return self._how.fix(generated)

    def text(self, generated: str) -> str:
        return self.fix(generated).strip()

    def rounds(self) -> list[AnswerRound]:
        numbers = sorted({h.round for h in self._hits})
        return [AnswerRound(round=i, memories=[recall_hit(h) for h in self._hits if h.round == i],
                            per_layer=self._per_layer if i == 1 else {}) for i in numbers]


class GenerativeSource:
    """The model asks for documents by id; their text is appended; routing runs again."""

    def __init__(self, engine: Runtime, question: str, select: SelectPerLayer,
                 max_rounds: int, max_new: int) -> None:
        self._engine, self._question = engine, question
        self._select, self._max_rounds, self._max_new = select, max_rounds, max_new
        self._protocol = IdProtocol.from_msa_config(getattr(engine.lm.msa, "raw", None))
        self._state = GenerativeState()
        self.read, self.prompt_tokens, self.memory_tokens = "pooled", 0, 0

    def tokens(self) -> Iterator[int]:
        tok = self._engine.tokenizer
        return generative_rounds(
            self._question, self._select, self._generate,
            lambda ids: tok.decode(ids, skip_special_tokens=True), self._protocol,
            self._max_rounds, self._state)

    def _generate(self, prompt: str,
                  selection: Mapping[int, Sequence[StoredMemory]]) -> Iterator[int]:
        with self._engine.lock:
            r = Reader(self._engine, prompt, [], "pooled", selection)
        self.prompt_tokens = max(self.prompt_tokens, len(r.prompt))
        self.memory_tokens = max(self.memory_tokens, r.memory_tokens)
        model = self._engine.lm.model
        stop = stop_ids(model, self._engine.tokenizer)
        return after_first(greedy(model, r.prompt, self._max_new, stop, r.memory, r.start),
                           r.prefetch_next)

    def fix(self, generated: str) -> str:
        return generated

    def text(self, generated: str) -> str:
        return self._state.final_text

    def rounds(self) -> list[AnswerRound]:
        out = []
        by_id = {m.id: m for m in self._state.handles}
        for rnd in self._state.rounds:
            votes: dict[str, int] = {}
            for ids in rnd.selected.values():
                for i in ids:
                    votes[i] = votes.get(i, 0) + 1
            n_layers = max(1, len(rnd.selected))
            hits = [recall_hit(Recalled(by_id[i], v / n_layers, rnd.round))
                    for i, v in sorted(votes.items(), key=lambda kv: -kv[1])]
            out.append(AnswerRound(round=rnd.round, memories=hits, per_layer=rnd.selected,
                                   asked=rnd.asked, appended=rnd.appended))
        return out


def after_first(tokens: Iterator[int], then: Callable[[], None]) -> Iterator[int]:
    """``tokens``, calling ``then`` once the first one has been taken (or when they end or are
    dropped, if none was): work for later (the prefetch) starts after the prefill."""
    pending = True
    try:
        for token in tokens:
            yield token
            if pending:
                pending = False
                then()
    finally:
        if pending:
            then()


def _words_end(text: str) -> int:
    """Where the text's last whole word ends: after its last whitespace (0 if none)."""
    return max(text.rfind(c) for c in (" ", "\n", "\t")) + 1


class AnswerStream:
    """Iterate to get text pieces as tokens come; ``.answer`` holds the result afterwards."""

    def __init__(self, engine: Runtime, source: TokenSource, timings: dict[str, float]) -> None:
        self._engine, self._source, self._timings = engine, source, dict(timings)
        self.answer: Answer | None = None

    def __iter__(self) -> Iterator[str]:
        tok = self._engine.tokenizer
        tokens: list[int] = []
        shown = ""
        start = time.perf_counter()
        for t in self._source.tokens():
            tokens.append(t)
            text = tok.decode(tokens, skip_special_tokens=True)
            if text.endswith("\ufffd"):  # whole characters only
                continue
            ready = self._source.fix(text[:_words_end(text)])  # whole words only
            if len(ready) > len(shown):
                yield ready[len(shown):]
                shown = ready
        self._timings["generate_ms"] = 1000 * (time.perf_counter() - start)
        text = tok.decode(tokens, skip_special_tokens=True)
        if len(rest := self._source.fix(text)) > len(shown):
            yield rest[len(shown):]
        self.answer = self._finish(text, len(tokens))

    def collect(self) -> Answer:
        for _ in self:
            pass
        assert self.answer is not None
        return self.answer

    def _finish(self, text: str, n_generated: int) -> Answer:
        s = self._source
        return Answer(text=s.text(text), read=s.read, rounds=s.rounds(),
                      prompt_tokens=s.prompt_tokens, memory_tokens=s.memory_tokens,
                      generated_tokens=n_generated, timings_ms=self._timings)
