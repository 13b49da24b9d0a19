"""Generated fact documents and questions with exactly known answers (single- and two-hop).

Each chain is two documents: "X works for Y" and "Y is based in Z". The second never names X,
so the two-hop question "In which city does X work?" needs both. Names are generated, so the
model cannot know the answers without memory. Deterministic for a seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

_ON = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr",
       "st", "th", "vr"]
_NU = ["a", "e", "i", "o", "u", "ai", "ea", "ou"]
_CO = ["n", "r", "s", "l", "x", "th", "nd", "rk", "sh", ""]
ROLES = ["engineer", "designer", "analyst", "chemist", "accountant", "pilot", "editor", "nurse"]
SECTORS = ["shipping", "software", "textile", "robotics", "insurance", "brewing", "mining"]


@dataclass(frozen=True)
class Question:
    text: str
    answer: str
    hops: int
    gold: tuple[int, ...]  # indices of the documents needed, in chain order


@dataclass(frozen=True)
class FactSet:
    docs: list[str]
    questions: list[Question]


def _word(rng: random.Random, syllables: int) -> str:
    w = "".join(rng.choice(_ON) + rng.choice(_NU) + rng.choice(_CO) for _ in range(syllables))
    return w.capitalize()


def _unique(rng: random.Random, make, taken: set[str]) -> str:  # noqa: ANN001
    while (name := make(rng)) in taken:
        pass
    taken.add(name)
    return name


def fact_chains(n_chains: int = 100, seed: int = 0) -> FactSet:
    """``2 * n_chains`` documents; per chain two single-hop questions and one two-hop one."""
    rng, taken = random.Random(seed), set()
    docs: list[str] = []
    questions: list[Question] = []
    for _ in range(n_chains):
        person = _unique(rng, lambda r: f"{_word(r, 2)} {_word(r, 2)}", taken)
        company = _unique(rng, lambda r: f"{_word(r, 2)} {rng.choice(['Labs', 'Group'])}", taken)
        city = _unique(rng, lambda r: _word(r, 3), taken)
        a, b = len(docs), len(docs) + 1
        docs.append(f"{person} joined {company} as a {rng.choice(ROLES)} in "
                    f"{rng.randint(1990, 2024)} and has worked there ever since.")
        sector = rng.choice(SECTORS)
        article = "an" if sector[0] in "aeiou" else "a"
        docs.append(f"{company} is {article} {sector} company based in {city}, where it "
                    f"has had its headquarters for {rng.randint(3, 90)} years.")
        questions += [
            Question(f"Which company does {person} work for?", company, 1, (a,)),
            Question(f"In which city is {company} based?", city, 1, (b,)),
            Question(f"In which city does {person} work?", city, 2, (a, b)),
        ]
    return FactSet(docs, questions)
