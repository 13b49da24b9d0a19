"""Wikipedia description -> article, with a clean validation/test split.

The bank is :func:`msa_agent.bench.wiki.wiki_split`'s 2,000 articles (seed 0); the router's
training articles (``train``) are disjoint from it. Earlier sessions compared router variants
on the 200 questions of that split, so those 200 are the **validation** split here. The
**test** split is every other bank article whose description is unique in the whole data set:
never used to choose anything. ``n_bank`` < 2000 takes a prefix of the bank (quick mode), which
keeps both splits' questions inside it.
"""

from __future__ import annotations

from collections import Counter

from msa_agent.bench.tasks.base import MemoryItem, Query, Stage, Task
from msa_agent.bench.wiki import load_articles, wiki_split

NAMESPACE = "wiki"


def build(n_bank: int = 2000, n_per_split: int = 200) -> Task:
    """One stage: ``n_bank`` summaries; up to ``n_per_split`` questions per split."""
    split = wiki_split(2000, 200, seed=0)
    bank = split.bank[:n_bank]
    used = {a.title for a in split.questions}
    counts = Counter(a.description for a in load_articles())
    val = [a for a in bank if a.title in used][:n_per_split]
    test = [a for a in bank if a.title not in used and counts[a.description] == 1]
    test = test[:n_per_split]
    memories = tuple(MemoryItem(f"w:{a.title}", a.text, NAMESPACE, order=i)
                     for i, a in enumerate(bank))
    queries = tuple(
        Query(f"wiki-{name}-{j}", a.description, (f"w:{a.title}",), "description", name,
              NAMESPACE, answer=a.title)
        for name, arts in (("val", val), ("test", test)) for j, a in enumerate(arts))
    desc = (f"{len(bank)} Wikipedia lead summaries (the bank of wiki_split seed 0); the question "
            "is the article's unique short description. val = the 200 questions earlier "
            "sessions used to compare routers; test = other unique-description bank articles.")
    return Task("wiki", desc, (Stage("all", memories, queries),),
                {"n_bank": n_bank, "n_per_split": n_per_split})
