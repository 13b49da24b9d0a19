"""Token streaming for ``Memory.answer``: an iterable of text pieces that ends with an Answer."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

from msa_agent.runtime.answer import Reader, stop_ids
from msa_agent.runtime.generate import greedy
from msa_agent.types import Answer, AnswerRound, RecallHit


class AnswerStream:
    """Iterate to get text pieces as tokens come; ``.answer`` holds the result afterwards."""

    def __init__(self, engine: Any, reader: Reader, hits: Sequence[RecallHit],
                 max_new_tokens: int, timings: dict[str, float]) -> None:
        self._engine, self._reader, self._hits = engine, reader, list(hits)
        self._max_new, self._timings = max_new_tokens, dict(timings)
        self.answer: Answer | None = None

    def __iter__(self) -> Iterator[str]:
        tok, model = self._engine.tokenizer, self._engine.lm.model
        r, tokens, shown = self._reader, [], ""
        start = time.perf_counter()
        for t in greedy(model, r.prompt, self._max_new, stop_ids(model, tok), r.memory, r.start):
            tokens.append(t)
            text = tok.decode(tokens, skip_special_tokens=True)
            if len(text) > len(shown) and not text.endswith("\ufffd"):  # whole characters only
                yield text[len(shown):]
                shown = text
        self._timings["generate_ms"] = 1000 * (time.perf_counter() - start)
        self.answer = self._finish(tok.decode(tokens, skip_special_tokens=True), len(tokens))

    def collect(self) -> Answer:
        for _ in self:
            pass
        assert self.answer is not None
        return self.answer

    def _finish(self, text: str, n_generated: int) -> Answer:
        rounds = sorted({h.round for h in self._hits})
        return Answer(
            text=text.strip(), read=self._reader.read,
            rounds=[AnswerRound(round=i, memories=[h for h in self._hits if h.round == i])
                    for i in rounds],
            prompt_tokens=len(self._reader.prompt), memory_tokens=self._reader.memory_tokens,
            generated_tokens=n_generated, timings_ms=self._timings,
        )
