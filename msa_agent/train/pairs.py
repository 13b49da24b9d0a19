"""Training pairs for the router: labelled JSONL, and self-supervised inverse cloze.

A pair is a query, the memory text it should recall, and optional explicit negatives. Its
``group`` names where the positive came from: two documents of one group are never used as
negatives of each other (inverse-cloze passages of one source share sentences).
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from msa_agent.errors import InvalidInputError

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


@dataclass(frozen=True)
class Pair:
    """One supervised example: ``query`` should recall ``positive`` rather than ``negatives``."""

    query: str
    positive: str
    negatives: tuple[str, ...] = field(default_factory=tuple)
    group: str = ""

    @property
    def source(self) -> str:
        """Group key used to avoid false negatives (the positive itself when not given)."""
        return self.group or self.positive


def read_pairs_jsonl(path: str | Path) -> list[Pair]:
    """Read ``{"query": str, "positive": str, "negatives": [str, ...]?}`` lines.

    Blank lines are skipped; a malformed line raises :class:`InvalidInputError` naming it.
    """
    pairs = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"{path}:{n}: not JSON ({exc.msg})") from exc
        pairs.append(_pair_of(row, f"{path}:{n}"))
    return pairs


def _pair_of(row: object, where: str) -> Pair:
    if not isinstance(row, dict):
        raise InvalidInputError(f"{where}: expected an object")
    query, positive = row.get("query"), row.get("positive")
    negatives = row.get("negatives") or []
    if not isinstance(query, str) or not query.strip():
        raise InvalidInputError(f"{where}: 'query' must be a non-empty string")
    if not isinstance(positive, str) or not positive.strip():
        raise InvalidInputError(f"{where}: 'positive' must be a non-empty string")
    if not isinstance(negatives, list) or not all(isinstance(x, str) for x in negatives):
        raise InvalidInputError(f"{where}: 'negatives' must be a list of strings")
    negs = tuple(x for x in negatives if x.strip() and x != positive)
    return Pair(query.strip(), positive, negs)


def split_sentences(text: str) -> list[str]:
    """Sentences of a passage (a light rule: end mark, space, capital or digit next)."""
    text = " ".join(text.split())
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()] if text else []


def inverse_cloze(
    passages: Iterable[str],
    *,
    per_passage: int = 1,
    min_query_chars: int = 20,
    seed: int = 0,
    groups: Sequence[str] | None = None,
) -> list[Pair]:
    """Inverse-cloze pairs: a sentence is the query, the rest of its passage the positive.

    Passages with fewer than two usable sentences give nothing (no "rest" would remain, or
    the query would be too short to mean anything). Up to ``per_passage`` sentences are drawn
    from each passage, deterministically for a given ``seed``. ``groups`` names each passage's
    source (default: its position), so pairs of one source never serve as each other's negatives.
    """
    rng = random.Random(seed)
    pairs = []
    for i, passage in enumerate(passages):
        sentences = split_sentences(passage)
        if len(sentences) < 2:
            continue
        usable = [j for j, s in enumerate(sentences) if len(s) >= min_query_chars]
        for j in rng.sample(usable, min(per_passage, len(usable))):
            rest = " ".join(s for k, s in enumerate(sentences) if k != j)
            group = groups[i] if groups is not None else f"passage-{i}"
            pairs.append(Pair(sentences[j], rest, group=group))
    return pairs


# Capitalised word runs ("Ada Lovelace", "Vrai Thorn Labs"); a run of one word counts only
# when it does not open its sentence (there a capital says nothing).
_NAME = re.compile(r"\b[A-Z][a-z]+(?:[ -][A-Z][a-z]+)*\b")
_NOT_NAMES = {"The", "This", "That", "These", "Those", "It", "He", "She", "They", "We", "In",
              "On", "At", "For", "And", "But", "Its", "His", "Her", "Their", "As", "A", "An"}
# Generic question shapes; none is a benchmark question's wording.
ENTITY_TEMPLATES = ("What do you know about {}?", "Tell me about {}.", "Anything on {}?",
                    "What did I note about {}?", "{}")


def name_spans(passage: str) -> list[str]:
    """Distinct capitalised names of a passage, in order of first appearance."""
    names: list[str] = []
    for sentence in split_sentences(passage):
        for m in _NAME.finditer(sentence):
            words = [w for w in m.group().split() if w not in _NOT_NAMES]
            if not words or (len(words) == 1 and m.start() == 0):
                continue
            name = " ".join(words)
            if len(name) >= 3 and name not in names:
                names.append(name)
    return names


def _named_passages(passages: Iterable[str], groups: Sequence[str] | None
                    ) -> Iterator[tuple[str, list[str], str]]:
    """Each passage with its names that no other passage holds (in order of appearance) and
    its group (``groups[i]``, else ``passage-i``)."""
    passages = list(passages)
    spans = [name_spans(p) for p in passages]
    owners = Counter(n for names in spans for n in names)  # passages naming each name
    for i, (passage, names) in enumerate(zip(passages, spans)):
        yield (passage, [n for n in names if owners[n] == 1],
               groups[i] if groups is not None else f"passage-{i}")


def entity_pairs(
    passages: Iterable[str],
    *,
    per_passage: int = 2,
    seed: int = 0,
    groups: Sequence[str] | None = None,
) -> list[Pair]:
    """Entity-keyed pairs: a short question naming an entity of a passage -> the passage.

    They teach the router to match rare names (invented people, companies, places), which
    description and inverse-cloze pairs rarely need; a name that appears in several passages
    is skipped (it has no single positive). Self-supervised: needs only the texts.
    """
    rng = random.Random(seed)
    pairs = []
    for passage, unique, group in _named_passages(passages, groups):
        for name in rng.sample(unique, min(per_passage, len(unique))):
            pairs.append(Pair(rng.choice(ENTITY_TEMPLATES).format(name), passage, group=group))
    return pairs


# Letters of invented words: single consonants and vowels only, so a word is a fresh string
# of common letters that the tokenizer splits into pieces (no table of any benchmark's).
_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


def invented_word(rng: random.Random) -> str:
    """A capitalised pronounceable non-word of 4 to 9 letters (consonant-vowel pairs, maybe a
    last consonant): what an unseen person, company or place name looks like to a model."""
    pairs = rng.randint(2, 4)
    word = "".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(pairs))
    return (word + (rng.choice(_CONSONANTS) if rng.random() < 0.6 else "")).capitalize()


def renamed_pairs(
    passages: Iterable[str],
    *,
    per_passage: int = 2,
    seed: int = 0,
    groups: Sequence[str] | None = None,
) -> list[Pair]:
    """Renamed-entity pairs: one name of a passage replaced everywhere by invented words, and
    the new name's questions -> the renamed passage: an entity question, and (``per_passage``
    2) a sentence holding the name -> the rest of the passage, as inverse cloze.

    A model knows real names; it has never seen an invented one, so these pairs ask the
    router to match a name by its pieces rather than by what the model knows of it (agents'
    memories are full of such names). The renamed name is the passage's most frequent name
    of those found in no other passage; every word of it gets its own invented word.
    Self-supervised: needs only texts.
    """
    rng = random.Random(seed)
    pairs = []
    for text, new, group in _renamed_passages(passages, groups, rng):
        # the original's group: the two texts are one passage, never each other's negatives
        pairs.append(Pair(rng.choice(ENTITY_TEMPLATES).format(new), text, group=group))
        sentences = split_sentences(text)
        holding = [j for j, s in enumerate(sentences) if new in s and len(s) >= 20]
        if sum(new in s for s in sentences) < 2:  # the rest must still name it
            holding = []
        if per_passage > 1 and len(sentences) > 1 and holding:
            j = rng.choice(holding)  # inverse cloze: the sentence -> the rest of the passage
            rest = " ".join(s for k, s in enumerate(sentences) if k != j)
            pairs.append(Pair(sentences[j], rest, group=group))
    return pairs


def _renamed_passages(passages: Iterable[str], groups: Sequence[str] | None,
                      rng: random.Random) -> Iterator[tuple[str, str, str]]:
    """Each passage that has a name of its own, with that name (its most frequent one)
    replaced everywhere by invented words: (renamed text, the new name, group)."""
    for passage, unique, group in _named_passages(passages, groups):
        if not unique:
            continue
        name = max(unique, key=passage.count)  # the passage's subject, most often
        new = " ".join(invented_word(rng) for _ in name.split())
        yield re.sub(rf"\b{re.escape(name)}\b", new, passage), new, group


SHORT = (20, 300)  # characters of a sentence that stands alone as a memory


def renamed_sentence_pairs(
    passages: Iterable[str],
    *,
    seed: int = 0,
    groups: Sequence[str] | None = None,
) -> list[Pair]:
    """Renamed-entity pairs whose documents are single sentences: in a renamed passage
    (:func:`renamed_pairs`), one sentence naming the new name is the document; its queries
    are an entity question and, where another sentence names it too, that sentence.

    Agents' memories are often one short statement about a named thing ("X is based in Y",
    "my manager is X"); a one-sentence document is a single routing chunk, so only the name's
    own tokens can tell it from other sentences of the same shape. Sentences of ``SHORT``
    length only.
    """
    rng = random.Random(seed)
    pairs = []
    for text, new, group in _renamed_passages(passages, groups, rng):
        holding = [s for s in split_sentences(text)
                   if new in s and SHORT[0] <= len(s) <= SHORT[1]]
        if not holding:
            continue
        doc, *other = rng.sample(holding, min(2, len(holding)))
        pairs.append(Pair(rng.choice(ENTITY_TEMPLATES).format(new), doc, group=group))
        pairs += [Pair(o, doc, group=group) for o in other]
    return pairs


def dedupe(pairs: Sequence[Pair]) -> list[Pair]:
    """Drop exact duplicate (query, positive) pairs, keeping the first."""
    seen: set[tuple[str, str]] = set()
    out = []
    for p in pairs:
        if (p.query, p.positive) not in seen:
            seen.add((p.query, p.positive))
            out.append(p)
    return out
