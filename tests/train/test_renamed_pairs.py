"""Renamed-entity pairs: a passage's name replaced by invented words, queried by that name."""

from __future__ import annotations

import random
import re

from msa_agent.train.pairs import (
    ENTITY_TEMPLATES,
    invented_word,
    name_spans,
    renamed_pairs,
    renamed_sentence_pairs,
    split_sentences,
)

CURIE = ("Marie Curie was a physicist. In 1903 Marie Curie won the Nobel Prize with Pierre "
         "Curie. She lived in Paris.")
LOVELACE = "Ada Lovelace wrote the first program. She worked with Charles Babbage."


def test_invented_words_are_capitalised_letters() -> None:
    rng = random.Random(0)
    words = [invented_word(rng) for _ in range(200)]
    assert all(re.fullmatch(r"[A-Z][a-z]{3,8}", w) for w in words)
    assert len(set(words)) > 190  # fresh names, not a short list


def test_the_most_frequent_unique_name_is_replaced_everywhere() -> None:
    entity, cloze = renamed_pairs([CURIE, LOVELACE], seed=1)[:2]
    assert "Marie Curie" not in entity.positive and "Pierre Curie" in entity.positive
    new = next(n for n in name_spans(entity.positive) if n not in name_spans(CURIE))
    assert len(new.split()) == 2  # one invented word per word of the name
    assert entity.positive.count(new) == 2
    assert entity.query in {t.format(new) for t in ENTITY_TEMPLATES}
    # inverse cloze: a sentence naming it -> the rest, which still names it
    assert new in cloze.query and cloze.query in split_sentences(entity.positive)
    assert cloze.query not in cloze.positive and new in cloze.positive
    assert entity.group == cloze.group == "passage-0"


def test_a_name_in_one_sentence_gives_no_cloze_pair_and_shared_names_none() -> None:
    pairs = renamed_pairs([LOVELACE], seed=0)
    assert len(pairs) == 1 and "Lovelace" not in pairs[0].positive
    assert renamed_pairs([LOVELACE, LOVELACE]) == []  # every name in two passages
    assert renamed_pairs([CURIE], per_passage=1, seed=1)[0].positive == (
        renamed_pairs([CURIE], seed=1)[0].positive)
    assert len(renamed_pairs([CURIE], per_passage=1, seed=1)) == 1


def test_renamed_pairs_are_deterministic_for_a_seed() -> None:
    assert renamed_pairs([CURIE, LOVELACE], seed=5) == renamed_pairs([CURIE, LOVELACE], seed=5)
    assert renamed_pairs([CURIE], seed=5) != renamed_pairs([CURIE], seed=6)


def test_renamed_sentence_pairs_have_one_sentence_documents() -> None:
    entity, cloze = renamed_sentence_pairs([CURIE], seed=1)
    assert entity.positive == cloze.positive  # one document, two queries
    assert entity.positive in split_sentences(entity.positive)  # a single sentence
    new = next(n for n in name_spans(entity.positive) if n not in name_spans(CURIE))
    assert "Marie Curie" not in entity.positive + cloze.query
    assert entity.query in {t.format(new) for t in ENTITY_TEMPLATES}
    assert new in cloze.query and cloze.query != cloze.positive
    assert entity.group == cloze.group == "passage-0"
    (only,) = renamed_sentence_pairs([LOVELACE])  # one sentence names it: no second query
    assert only.positive.endswith("wrote the first program.") and "Lovelace" not in only.positive


def test_renamed_sentence_pairs_skip_long_sentences() -> None:
    long = "Marie Curie " + "studied " * 60 + "physics."
    assert renamed_sentence_pairs([long]) == []
