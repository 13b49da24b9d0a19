"""Needles at scale: RULER-style multi-key needles among real filler, at growing memory sizes.

Memories are ~250-token passages of real text (:func:`msa_agent.bench.text.passages`: Paul
Graham essays, then Wikipedia), shuffled with the seed. Needles are RULER's multi-key form,
"One of the special magic numbers for {key} is: {7 digits}.", with invented two-word keys,
inserted between two sentences of a passage. ``n_queries`` needles are asked about (alternating
val/test) and live in the first stage; every stage also carries unasked *distractor* needles
(same template, other keys) in one passage of every ``distractor_every``, so "special magic
number" never identifies the gold by itself. Larger stages add filler and distractors only:
the same questions against a memory that grows (16K -> 64K -> 256K -> 1M tokens, nominal at
~250 tokens per passage; the measured token count is reported beside it).
"""

from __future__ import annotations

import random

from msa_agent.bench.facts import _unique, _word
from msa_agent.bench.tasks.base import MemoryItem, Query, Stage, Task
from msa_agent.bench.text import passages, sentences

NAMESPACE = "needles"
TOKENS_PER_PASSAGE = 250
SIZES = {"16K": 16_000, "64K": 64_000, "256K": 256_000, "1M": 1_000_000}
NEEDLE = "One of the special magic numbers for {key} is: {value}."
QUESTION = "What is the special magic number for {key} mentioned in the provided text?"


def _insert(rng: random.Random, text: str, needle: str) -> str:
    parts = sentences(text)
    at = rng.randrange(len(parts) + 1)
    return " ".join(parts[:at] + [needle] + parts[at:])


def build(sizes: tuple[str, ...] = ("16K",), n_queries: int = 40, distractor_every: int = 8,
          seed: int = 0) -> Task:
    """Stages at each of ``sizes`` (keys of :data:`SIZES`, ascending)."""
    rng, taken = random.Random(seed), set()
    pool = passages(4 * TOKENS_PER_PASSAGE)
    rng.shuffle(pool)
    counts = [SIZES[s] // TOKENS_PER_PASSAGE for s in sizes]
    if counts[-1] > len(pool):
        raise ValueError(f"not enough filler for {sizes[-1]}: {len(pool)} passages")
    if n_queries > counts[0]:
        raise ValueError("more needles than passages in the first stage")

    def key() -> str:
        return _unique(rng, lambda r: f"{_word(r, 2).lower()}-{_word(r, 2).lower()}", taken)

    texts = list(pool[: counts[-1]])
    gold_at = rng.sample(range(counts[0]), n_queries)
    queries = []
    for j, i in enumerate(gold_at):
        k = key()
        texts[i] = _insert(rng, texts[i], NEEDLE.format(key=k, value=rng.randrange(10**6, 10**7)))
        queries.append(Query(f"needle-{j}", QUESTION.format(key=k), (f"n{i}",), "multi-key",
                             "val" if j % 2 == 0 else "test", NAMESPACE))
    asked = set(gold_at)
    for i in range(0, len(texts), distractor_every):
        if i not in asked:
            needle = NEEDLE.format(key=key(), value=rng.randrange(10**6, 10**7))
            texts[i] = _insert(rng, texts[i], needle)
    memories = [MemoryItem(f"n{i}", t, NAMESPACE, order=i) for i, t in enumerate(texts)]
    stages = tuple(Stage(label, tuple(memories[:n]), tuple(queries))
                   for label, n in zip(sizes, counts))
    desc = (f"RULER-style multi-key needles: {n_queries} asked needles among ~250-token real-text "
            f"passages, one distractor needle per {distractor_every} passages; sizes "
            f"{', '.join(sizes)} (nominal tokens), same questions at every size (seed {seed}).")
    return Task("needles", desc, stages, {"sizes": list(sizes), "n_queries": n_queries,
                                          "distractor_every": distractor_every, "seed": seed})
