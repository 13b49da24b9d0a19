"""The answer stage's reader: one model, one prompt frame, one short-answer format for all.

Every row of the answer stage is read by the same :class:`Reader`: the embedded default model
(SmolLM2-135M-Instruct) loaded once, greedy decoding, at most ``max_new_tokens`` new tokens.
Its prompt is :func:`msa_agent.runtime.answer.prompt_ids`, the very function
``Memory.answer`` uses to read memories as text: the chat template with the system line
"Answer the question in a few words, using the memories when they are relevant.", then
``Memories: [1] ... [n] ...`` and ``Question: ...`` (the question alone when there are no
memories). Its generation is :func:`msa_agent.runtime.generate.greedy` with the same stop ids,
and its answer format is ``MemoryConfig.answer_format`` (default ``"extractive"``), applied to the
texts the row was shown (:mod:`msa_agent.runtime.extract`). So a baseline row differs from the
``msa-agent answer`` row only in which texts fill the frame.

Context budget: a prompt may hold at most ``window - max_new_tokens`` tokens, ``window`` being
the model's ``max_position_embeddings`` (8,192 for SmolLM2). A retriever's top-k texts that do
not fit are cut (:func:`fit`: memories kept in rank order, the first one that overflows cut at
a token boundary, the rest dropped) and the answer is marked ``truncated``; the full-context row
is never cut: it is skipped (and counted) when the whole namespace does not fit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from msa_agent.bench.tasks.base import SPLITS, Query
from msa_agent.config import MemoryConfig
from msa_agent.model.loader import LoadedModel, load_model
from msa_agent.runtime.answer import (
    DATED,
    ORDER,
    SYSTEM,
    SYSTEM_DATED,
    WORKED_EXAMPLE,
    arrange,
    prompt_ids,
    stop_ids,
)
from msa_agent.runtime.extract import decoding
from msa_agent.runtime.generate import greedy

MAX_NEW_TOKENS = 32
PER_SPLIT = {"quick": 6, "full": 30}  # answer-stage questions per split, by suite mode


def model_window(model: Any) -> int:
    """The model's context window: ``max_position_embeddings`` of its (text) config."""
    cfg = getattr(model.config, "text_config", None) or model.config
    return int(cfg.max_position_embeddings)


@dataclass
class Reader:
    """The shared reader: builds the prompt frame and generates greedily."""

    lm: LoadedModel
    max_new_tokens: int = MAX_NEW_TOKENS
    # MemoryConfig.answer_format (its default unless a bench sets the space's): every row
    # of a comparison decodes the same way
    answer_format: str = field(default_factory=lambda: MemoryConfig().answer_format)

    @property
    def window(self) -> int:
        return model_window(self.lm.model)

    @property
    def budget(self) -> int:
        """The most prompt tokens that leave room for the answer inside the window."""
        return self.window - self.max_new_tokens

    def prompt(self, question: str, texts: Sequence[str],
               times: Sequence[datetime] | None = None) -> list[int]:
        """``Memory.answer``'s text-reading frame around ``texts`` (best first; none: the
        question alone). With their ``times``, arranged and dated by ``Memory.answer``'s own
        rule (:func:`msa_agent.runtime.answer.arrange`); without, as given."""
        notes, system = arrange(texts, times) if times is not None else (list(texts), SYSTEM)
        return prompt_ids(self.lm.tokenizer, question, notes, system, WORKED_EXAMPLE)

    def fits(self, prompt: Sequence[int]) -> bool:
        return len(prompt) <= self.budget

    def generate(self, prompt: Sequence[int], shown: Sequence[str] = (),
                 question: str = "") -> str:
        """Greedy answer to ``prompt`` (stripped text), as ``Memory.answer`` generates;
        ``shown``: the memory texts in the prompt (an extractive answer copies from them, from
        the lines about ``question``)."""
        model, tok = self.lm.model, self.lm.tokenizer
        how = decoding(tok, self.answer_format, shown, question)
        out = list(greedy(model, prompt, self.max_new_tokens, stop_ids(model, tok), copy=how.copy))
        return how.fix(tok.decode(out, skip_special_tokens=True)).strip()

    def settings(self) -> dict[str, Any]:
        """What every row shares, for the result file."""
        return {
            "model": self.lm.name,
            "window": self.window,
            "budget": self.budget,
            "max_new_tokens": self.max_new_tokens,
            "decoding": "greedy",
            "answer_format": self.answer_format,
            "system_prompt": SYSTEM,
            "system_prompt_dated": SYSTEM_DATED,
            "arrangement": f"order={ORDER}, dated={DATED}, worked example={WORKED_EXAMPLE} "
            "(runtime.answer.arrange and prompt_ids, for every row with memories; each memory "
            "dated by the task's own dates, memory_time)",
            "frame": "chat template; system line; 'Memories:\\n[1] ...\\n\\nQuestion: Q' "
            "(the question alone without memories)",
        }


@lru_cache(maxsize=2)
def default_reader(dtype: str = "float32") -> Reader:
    """The embedded default model (computed in ``dtype``), loaded once per process and
    shared by every row."""
    return Reader(load_model(dtype=dtype))


def fit(reader: Reader, question: str, texts: Sequence[str],
        times: Sequence[datetime] | None = None) -> tuple[list[int], int, bool]:
    """The prompt of ``texts`` (rank order, with their ``times`` if dated) cut to the
    reader's budget: texts are kept best first, the first that overflows is cut at a token
    boundary and the rest dropped. Returns the prompt, how many texts it holds, and whether
    anything was cut."""
    def prompt(kept: list[str]) -> list[int]:
        return reader.prompt(question, kept, None if times is None else times[:len(kept)])

    kept: list[str] = []
    for text in texts:
        if reader.fits(prompt([*kept, text])):
            kept.append(text)
            continue
        if cut := _longest_prefix(reader, prompt, kept, text):
            kept.append(cut)
        return prompt(kept), len(kept), True
    return prompt(kept), len(kept), False


def _longest_prefix(reader: Reader, prompt: Callable[[list[str]], list[int]], kept: list[str],
                    text: str) -> str:
    """The longest token prefix of ``text`` that still fits after ``kept`` (binary search)."""
    tok = reader.lm.tokenizer
    ids = tok(text, add_special_tokens=False)["input_ids"]
    lo, hi = 0, len(ids)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if reader.fits(prompt([*kept, tok.decode(ids[:mid])])):
            lo = mid
        else:
            hi = mid - 1
    return tok.decode(ids[:lo]) if lo else ""


def pick(queries: Sequence[Query], per_split: int) -> list[Query]:
    """Up to ``per_split`` questions with a gold answer per split, kinds taken in turn.

    Deterministic: within a split, kinds in order of first appearance, then round-robin over
    them, each kind's questions in task order.
    """
    out: list[Query] = []
    for split in SPLITS:
        by_kind: dict[str, list[Query]] = {}
        for q in queries:
            if q.split == split and q.answer:
                by_kind.setdefault(q.kind, []).append(q)
        chosen: list[Query] = []
        depth = max((len(v) for v in by_kind.values()), default=0)
        for i in range(depth):
            chosen += [v[i] for v in by_kind.values() if i < len(v)]
        out += chosen[:per_split]
    return out
