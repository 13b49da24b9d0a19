"""The distillation corpus: every offline text the registries give, as routing pairs, plus the
benchmark suite's evaluation sets, in one file that travels to a GPU machine.

Training texts (never a benchmark memory: any text whose opening occurs in a memory of the
suite's tasks is dropped, and the Wikipedia bank is never used):
- Wikipedia ``wiki_split().train``: description -> article (unique descriptions only),
  inverse cloze, entity-keyed questions (the title and names found in the text);
- the Paul Graham essays, in ~1,000-character passages: inverse cloze and entity questions;
- the Jargon File: "What does TERM mean?"-style questions -> the entry, plus inverse cloze;
- the KJV, in passages of four verses: inverse cloze and entity questions (rare names);
- optionally (``--renamed N``), N Wikipedia articles with a name replaced by invented words,
  and that name's questions (``msa_agent.train.pairs.renamed_pairs``);
- optionally (``--renamed-sentences N``), N more with single renamed sentences as the
  documents (``renamed_sentence_pairs``): short statements about an unseen name.

Evaluation sets: the suite's full-size facts, wiki, sessions and LongMemEval tasks (both
splits; the runner chooses on ``val`` only). The file is gzip JSON; a teacher's top-k
(:mod:`msa_agent.train.teacher`) can be stored beside it.
"""

from __future__ import annotations

import gzip
import json
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from msa_agent.train.pairs import (
    ENTITY_TEMPLATES,
    entity_pairs,
    inverse_cloze,
    renamed_pairs,
    renamed_sentence_pairs,
)

EVAL_TASKS = ("facts", "wiki", "sessions", "longmemeval")
JARGON_TEMPLATES = ("What does {} mean?", "What is {}?", "Define {}.", "{} meaning")
_OPENING = 100  # characters of a text that must not occur in any benchmark memory


@dataclass
class EvalSet:
    """One task's memories and questions, with gold given as memory keys."""

    name: str
    keys: list[str]
    docs: list[str]
    namespaces: list[str]
    queries: list[dict[str, Any]]  # Query fields (qid, text, gold, kind, split, ...)


@dataclass
class Corpus:
    """Training documents, (query, document index) pairs, and evaluation sets."""

    docs: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)
    positives: list[int] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # which recipe made each pair
    evals: list[EvalSet] = field(default_factory=list)

    def add(self, text: str, group: str) -> int:
        self.docs.append(text)
        self.groups.append(group)
        return len(self.docs) - 1

    def pair(self, query: str, doc: int, source: str) -> None:
        self.queries.append(query)
        self.positives.append(doc)
        self.sources.append(source)

    def counts(self) -> dict[str, int]:
        return dict(Counter(self.sources))

    def save(self, path: str | Path) -> None:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            json.dump({**{k: v for k, v in asdict(self).items() if k != "evals"},
                       "evals": [asdict(e) for e in self.evals]}, f)

    @classmethod
    def load(cls, path: str | Path) -> Corpus:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            raw = json.load(f)
        evals = [EvalSet(**e) for e in raw.pop("evals")]
        return cls(**raw, evals=evals)


def eval_sets(tasks: Sequence[str] = EVAL_TASKS, mode: str = "full") -> list[EvalSet]:
    """The suite's tasks (last stage) as evaluation sets."""
    from msa_agent.bench.tasks import build

    out = []
    for name in tasks:
        stage = build(name, mode).stages[-1]
        out.append(EvalSet(name, [m.key for m in stage.memories], [m.text for m in stage.memories],
                           [m.namespace for m in stage.memories],
                           [asdict(q) for q in stage.queries]))
    return out


def _clean(texts: Iterable[str], memories: str) -> list[str]:
    """Texts whose opening occurs in no benchmark memory (``memories`` joined)."""
    return [t for t in texts if t.strip() and " ".join(t.split())[:_OPENING] not in memories]


def _self_supervised(c: Corpus, passages: list[str], tag: str, ict: int, entities: int,
                     seed: int, names: Sequence[str] | None = None) -> list[int]:
    """Add ``passages`` (group ``tag:name``) with their inverse-cloze and entity pairs."""
    groups = [f"{tag}:{n}" for n in (names if names is not None else range(len(passages)))]
    ids = [c.add(p, g) for p, g in zip(passages, groups)]
    where = {p: i for p, i in zip(passages, ids)}
    for p in inverse_cloze(passages, per_passage=ict, seed=seed, groups=groups):
        c.pair(p.query, c.add(p.positive, p.group), f"{tag}-ict")  # the rest of the passage
    for p in entity_pairs(passages, per_passage=entities, seed=seed, groups=groups):
        c.pair(p.query, where[p.positive], f"{tag}-entity")
    return ids


def _renamed(c: Corpus, passages: list[str], groups: list[str], n: int, seed: int,
             sentences: bool = False) -> None:
    """Renamed-entity pairs (:func:`renamed_pairs`, or with ``sentences``
    :func:`renamed_sentence_pairs`) from ``n`` of ``passages`` drawn at random; each positive
    text is added once."""
    picked = random.Random(seed).sample(range(len(passages)), min(n, len(passages)))
    make, tag = ((renamed_sentence_pairs, "wiki-renamed-sentence") if sentences
                 else (renamed_pairs, "wiki-renamed"))
    added: dict[str, int] = {}
    for p in make([passages[i] for i in picked], seed=seed,
                  groups=[groups[i] for i in picked]):
        if p.positive not in added:
            added[p.positive] = c.add(p.positive, p.group)
        c.pair(p.query, added[p.positive], tag)


def build_corpus(*, ict: int = 1, entities: int = 2, kjv_passages: int = 4000,
                 renamed: int = 0, renamed_sentences: int = 0, seed: int = 0) -> Corpus:
    """Pairs from every offline text source, minus anything a benchmark memory holds."""
    from msa_agent.bench import debian
    from msa_agent.bench.text import essays
    from msa_agent.train.data import wiki_split

    rng = random.Random(seed)
    c = Corpus(evals=eval_sets())
    memories = "\n".join(" ".join(d.split()) for e in c.evals for d in e.docs)
    train = wiki_split().train
    kept = set(_clean([a.text for a in train], memories))
    arts = [a for a in train if a.text in kept]
    unique = Counter(a.description for a in arts)
    ids = _self_supervised(c, [a.text for a in arts], "wiki", ict, entities, seed,
                           [a.title for a in arts])
    for a, i in zip(arts, ids):
        if unique[a.description] == 1:
            c.pair(a.description, i, "wiki-description")
        c.pair(rng.choice(ENTITY_TEMPLATES).format(a.title), i, "wiki-title")
    texts, titles = [a.text for a in arts], [f"wiki:{a.title}" for a in arts]
    _renamed(c, texts, titles, renamed, seed)
    _renamed(c, texts, titles, renamed_sentences, seed + 1, sentences=True)  # other draws
    paras = _clean([p for _, ps in essays() for p in ps], memories)
    _self_supervised(c, paras, "essay", ict, entities, seed)
    entries = [(t, e) for t, e in debian.jargon() if len(e) >= 80]
    clean = set(_clean([e for _, e in entries], memories))
    entries = [(t, e) for t, e in entries if e in clean]
    ids = _self_supervised(c, [e for _, e in entries], "jargon", ict, 0, seed)
    for (term, _), i in zip(entries, ids):
        c.pair(rng.choice(JARGON_TEMPLATES).format(term), i, "jargon-term")
    verses = [t for _, t in debian.kjv()]
    groups = [" ".join(verses[s : s + 4]) for s in range(0, len(verses) - 3, 4)]
    picked = rng.sample(groups, min(kjv_passages, len(groups)))
    _self_supervised(c, _clean(picked, memories), "kjv", ict, entities, seed)
    return c


def main(out: Path = Path("bench-out/train/corpus.json.gz"), ict: int = 1,
         entities: int = 2, kjv_passages: int = 4000, renamed: int = 0,
         renamed_sentences: int = 0) -> None:
    """Build the corpus and write it (gzip JSON). ``renamed``: Wikipedia articles that also
    give renamed-entity pairs (0: none, the corpus the shipped routers learned from);
    ``renamed_sentences``: articles that give renamed one-sentence documents."""
    c = build_corpus(ict=ict, entities=entities, kjv_passages=kjv_passages, renamed=renamed,
                     renamed_sentences=renamed_sentences)
    out.parent.mkdir(parents=True, exist_ok=True)
    c.save(out)
    print(json.dumps({"docs": len(c.docs), "pairs": len(c.queries), **c.counts(),
                      "evals": {e.name: [len(e.docs), len(e.queries)] for e in c.evals},
                      "bytes": out.stat().st_size}))


if __name__ == "__main__":
    import typer

    typer.run(main)
