"""Agent sessions: multi-turn chats of real text with planted personal facts.

Every user (one namespace) has ``n_sessions`` dated sessions. Filler turns are real text, one
of four kinds drawn at random: the user asks about a Wikipedia article and the assistant
answers with its lead summary; the user quotes a Paul Graham essay paragraph and the assistant
replies with the next one; the user asks what a hacker term means and the assistant answers
with its Jargon File entry; or the user asks for a Bible passage and the assistant quotes
four KJV verses (:mod:`msa_agent.bench.debian`). Into them we plant, with invented names and
values (so no model knows the answers):

- ``personal-fact``: a fact stated once ("my dentist is Dr. Brakel Vourn");
- ``knowledge-update``: a fact stated, then changed in a later session; gold = (new, old),
  scored as *newest ranked above the old one* (and in the top k);
- ``two-hop``: "my manager is Tasha Droun" in one session and, in a later one, "Tasha Droun
  grew up in Kelvarth" (never saying "manager"); the question "Where did my manager grow up?"
  needs both.

Every question carries its gold ``answer`` string (the invented value; for a changed fact the
new one; for two-hop the city), for the suite's answer stage. Users are split by index (even:
val, odd: test), so the splits share no memory. Not Shakespeare (kept aside for an independent
check).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from msa_agent.bench import debian
from msa_agent.bench.facts import _unique, _word
from msa_agent.bench.tasks.base import MemoryItem, Query, Stage, Task
from msa_agent.bench.text import essays
from msa_agent.bench.wiki import load_articles

# (statement with {v}, question): the value is an invented name or word
FACTS = [
    ("By the way, my dentist is Dr. {v}, I have a check-up next month.", "Who is my dentist?"),
    ("Our new cat is called {v}, she is already ruling the house.", "What is my cat's name?"),
    ("At work my project's codename is {v}, please keep that in mind.",
     "What is the codename of my project at work?"),
    ("My sister just moved to a town called {v}.", "Which town did my sister move to?"),
    ("I booked the anniversary dinner at a restaurant named {v}.",
     "Where did I book the anniversary dinner?"),
    ("My landlord's name is {v}, in case I need to write to him.", "Who is my landlord?"),
    ("The wifi network at home is named {v}.", "What is my home wifi network called?"),
    ("My daughter's violin teacher is {v}.", "Who is my daughter's violin teacher?"),
]
# (first statement, later change, question)
UPDATES = [
    ("I train at the {v} gym on weekday mornings.",
     "I cancelled my old membership; these days I train at the {v} gym instead.",
     "Which gym do I train at?"),
    ("My car is parked with a garage called {v} this month.",
     "I moved the car: it now stays at a garage called {v}.",
     "Which garage is my car parked at?"),
    ("My team lead is {v}.", "Reorg news: my team lead is now {v}.", "Who is my team lead?"),
    ("We get our vegetables from a farm called {v}.",
     "We switched suppliers, our vegetables now come from a farm called {v}.",
     "Which farm do our vegetables come from?"),
]
# (bridge statement about a role, statement about the person, question)
CHAINS = [
    ("My new manager is {p}, we met on Monday.", "{p} told me they grew up in {c}.",
     "Where did my manager grow up?"),
    ("The plumber who fixed our sink is {p}.", "{p} is driving back to {c} for the holidays.",
     "Where is the plumber who fixed our sink going for the holidays?"),
    ("My running partner is {p}.", "{p} has entered the marathon in {c} this spring.",
     "In which city is my running partner running a marathon?"),
]
ACKS = ["Noted, I'll remember that.", "Got it, thanks for telling me.", "Understood, noted."]


@dataclass
class _User:
    ns: str
    split: str
    sessions: list[list[str]]
    queries: list[Query]


@dataclass(frozen=True)
class _Texts:
    articles: list
    paras: list[str]
    jargon: tuple[tuple[str, str], ...]
    verses: tuple[tuple[str, str], ...]

    @classmethod
    def load(cls) -> _Texts:
        return cls(list(load_articles()), [p for _, ps in essays() for p in ps],
                   debian.jargon(), debian.kjv())


def _exchange(rng: random.Random, texts: _Texts) -> str:
    """One real-text ``User: ...\nAssistant: ...`` block, of a kind drawn at random."""
    kind = rng.randrange(4)
    if kind == 0:
        a = rng.choice(texts.articles)
        return f"User: Can you tell me about {a.title}?\nAssistant: {a.text[:600]}"
    if kind == 1:
        i = rng.randrange(len(texts.paras) - 1)
        return (f'User: I was reading an essay that says: "{texts.paras[i][:500]}" What do you '
                f"make of it?\nAssistant: It goes on: {texts.paras[i + 1][:500]}")
    if kind == 2:
        term, entry = rng.choice(texts.jargon)
        return f'User: What does "{term}" mean in hacker slang?\nAssistant: {entry[:600]}'
    i = rng.randrange(len(texts.verses) - 3)
    verses = texts.verses[i:i + 4]
    return (f"User: Can you read me {verses[0][0]} to {verses[-1][0]}?\nAssistant: "
            + " ".join(text for _, text in verses))


def _filler(rng: random.Random, texts: _Texts) -> list[str]:
    """Two real-text exchanges."""
    return [_exchange(rng, texts) for _ in range(2)]


def _user(u: int, n_sessions: int, rng: random.Random, taken: set[str], texts: _Texts
          ) -> _User:
    split = "val" if u % 2 == 0 else "test"
    ns = f"sessions-{split}-{u}"
    sessions = [_filler(rng, texts) for _ in range(n_sessions)]
    queries: list[Query] = []

    def plant(s: int, line: str) -> str:
        sessions[s].insert(rng.randrange(len(sessions[s]) + 1),
                           f"User: {line}\nAssistant: {rng.choice(ACKS)}")
        return f"{ns}:s{s}"

    def name() -> str:
        return _unique(rng, lambda r: f"{_word(r, 2)} {_word(r, 2)}", taken)

    for j, (stmt, q) in enumerate(rng.sample(FACTS, 4)):
        s, value = rng.randrange(n_sessions), name()  # the draws in their original order
        key = plant(s, stmt.format(v=value))
        queries.append(Query(f"{ns}-fact{j}", q, (key,), "personal-fact", split, ns,
                             answer=value))
    for j, (first, later, q) in enumerate(rng.sample(UPDATES, 2)):
        s_old = rng.randrange(n_sessions // 2)
        s_new = rng.randrange(s_old + 1, n_sessions)
        old = plant(s_old, first.format(v=name()))
        value = name()
        new = plant(s_new, later.format(v=value))
        queries.append(Query(f"{ns}-upd{j}", q, (new, old), "knowledge-update", split, ns,
                             metric="newest", answer=value))
    first, second, q = rng.choice(CHAINS)
    person, city = name(), _unique(rng, lambda r: _word(r, 3), taken)
    s_a = rng.randrange(n_sessions - 1)
    s_b = rng.randrange(s_a + 1, n_sessions)
    a, b = plant(s_a, first.format(p=person)), plant(s_b, second.format(p=person, c=city))
    queries.append(Query(f"{ns}-hop", q, (a, b), "two-hop", split, ns, hops=2, answer=city))
    return _User(ns, split, sessions, queries)


def build(n_users: int = 6, n_sessions: int = 8, seed: int = 0) -> Task:
    """One stage: ``n_users`` users (half val, half test) of ``n_sessions`` sessions each."""
    rng, taken = random.Random(seed), set()
    texts = _Texts.load()
    memories: list[MemoryItem] = []
    queries: list[Query] = []
    for u in range(n_users):
        user = _user(u, n_sessions, rng, taken, texts)
        for s, lines in enumerate(user.sessions):
            date = f"2025-{1 + s % 12:02d}-{1 + 3 * (s // 12):02d}"
            memories.append(MemoryItem(f"{user.ns}:s{s}", f"[{date}]\n" + "\n".join(lines),
                                       user.ns, order=len(memories), date=date))
        queries += user.queries
    desc = (f"{n_users} users x {n_sessions} sessions of real text (Wikipedia, Paul Graham, the "
            "Jargon File, the KJV) with planted invented facts: 4 personal facts, 2 changed "
            "facts (newest must win), "
            "1 two-hop chain over two sessions per user; users alternate val/test (seed "
            f"{seed}).")
    return Task("sessions", desc, (Stage("all", tuple(memories), tuple(queries)),),
                {"n_users": n_users, "n_sessions": n_sessions, "seed": seed})
