"""Extractive answers (``answer_format="extractive"``): every answer is a verbatim span of
one line of what the reader was shown."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from msa_agent import Memory
from msa_agent.errors import InvalidInputError
from msa_agent.runtime.answer import arrange, prompt_ids
from msa_agent.runtime.extract import (
    CopySpans,
    NameSnap,
    _names,
    answer_fix,
    content_words,
    copy_spans,
)
from msa_agent.runtime.generate import greedy

pytestmark = pytest.mark.filterwarnings("ignore::msa_agent.runtime.engine.RoutingQualityWarning")

STOP = {99}


class Words:
    """A word-level tokenizer: word ``w<i>`` is id ``i``."""

    def __call__(self, text: str | list[str], add_special_tokens: bool = False) -> dict:
        if isinstance(text, list):  # a batch, as a transformers tokenizer takes it
            return {"input_ids": [self(t)["input_ids"] for t in text]}
        return {"input_ids": [int(w[1:]) for w in text.split()]}


def run(spans: CopySpans, logits: list[torch.Tensor]) -> list[int]:
    """Tokens chosen under ``spans`` with these logits, up to a stop."""
    out = []
    for row in logits:
        token = spans.choose(row, STOP)
        assert token is not None  # with stop ids, a stop is always allowed after a token
        if token in STOP:
            break
        out.append(token)
    return out


def contiguous_in_a_line(tokens: list[int], lines: list[list[int]]) -> bool:
    n = len(tokens)
    return any(line[i:i + n] == tokens for line in lines for i in range(len(line) - n + 1))


def test_a_span_may_start_at_any_word_as_a_bare_word(tokenizer) -> None:  # noqa: ANN001
    """" Lisbon" mid-line and "Lisbon" at an answer's start are different tokens; both are
    allowed first, so the answer can start where a free answer would."""
    spans = CopySpans(tokenizer, ["Acme is based in Lisbon."])
    bare = tokenizer("Lisbon", add_special_tokens=False)["input_ids"][0]
    spaced = tokenizer(" Lisbon", add_special_tokens=False)["input_ids"][0]
    assert bare != spaced
    assert {bare, spaced} <= set(spans.allowed(STOP).tolist())


def test_no_answer_starts_at_a_date_or_a_speaker_label(tokenizer) -> None:  # noqa: ANN001
    spans = CopySpans(tokenizer, ["(2025-03-01) User: I moved to Lisbon."])
    first = set(spans.allowed(STOP).tolist())
    starts = {tokenizer(lead + w, add_special_tokens=False)["input_ids"][0]
              for w in ("I", "moved", "to", "Lisbon.") for lead in ("", " ")}
    assert first == starts  # "(" and "User" open no run (both stay copyable inside one)


class WholeWords:
    """A tokenizer with one id per distinct word (its leading space ignored)."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def __call__(self, text: str | list[str], add_special_tokens: bool = False) -> dict:
        if isinstance(text, list):
            return {"input_ids": [self(t)["input_ids"] for t in text]}
        return {"input_ids": [self.ids.setdefault(w, len(self.ids)) for w in text.split()]}


SESSION_LINES = ["User: I moved the car to a garage called Kest Vorn.\nAssistant: Understood.",
                 "Cenozoic Era is the current era."]


def first_words(tok: WholeWords, spans: CopySpans) -> set[str]:
    """The words an answer may start with."""
    first = set(spans.allowed(STOP).tolist())
    return {w for w, i in tok.ids.items() if i in first}


def test_with_a_question_answers_copy_from_the_lines_about_it() -> None:
    """Only lines that share a content word with the question ("car", "garage") open a
    span; when no line does, every line does."""
    tok = WholeWords()
    line = {"I", "moved", "the", "car", "to", "a", "garage", "called", "Kest", "Vorn."}
    about = CopySpans(tok, SESSION_LINES, "Which garage is my car parked at?")
    assert first_words(tok, about) == line
    every = line | {"Understood.", "Cenozoic", "Era", "is", "current", "era."}
    assert first_words(tok, CopySpans(tok, SESSION_LINES, "Where is Xyzzy?")) == every
    assert first_words(tok, CopySpans(tok, SESSION_LINES)) == every


TWO_HOP = ["User: The plumber who fixed our sink is Stexdror Rithgin.\nAssistant: Noted.",
           "User: Stexdror Rithgin is driving back to Kondea for the holidays.\n"
           "Assistant: Stexdror Rithgin sounds kind.",
           "User: We spent the holidays at home."]


def test_a_chain_question_copies_from_the_line_its_best_line_names() -> None:
    """The best line ("plumber", "fixed", "sink") restates the question and names Stexdror
    Rithgin; the line about the question ("holidays") that names him too is the second hop,
    and only it opens a span. A line naming him but about nothing asked ("sounds kind") and
    one about the question naming nobody ("at home") do not."""
    tok = WholeWords()
    spans = CopySpans(tok, TWO_HOP, "Where is the plumber who fixed our sink going for the "
                      "holidays?")
    hop = {"Stexdror", "Rithgin", "is", "driving", "back", "to", "Kondea", "for", "the",
           "holidays."}
    assert first_words(tok, spans) == hop


def test_a_single_hop_question_keeps_its_lines_when_a_name_recurs() -> None:
    """"Who is the plumber who fixed our sink?": no other line about it names him (the
    "sounds kind" line shares no word with the question), so the lines about it stay."""
    tok = WholeWords()
    spans = CopySpans(tok, TWO_HOP[:1] + TWO_HOP[1:2], "Who is the plumber who fixed our "
                      "sink?")
    assert first_words(tok, spans) == {"The", "plumber", "who", "fixed", "our", "sink", "is",
                                       "Stexdror", "Rithgin."}


def test_a_shared_word_of_two_names_is_no_hop() -> None:
    """"Geshdrouth Group" and "Vrermeath Group" share "Group"; a hop needs the whole name, so
    both lines about the question ("Dronrish", "company") stay open."""
    tok = WholeWords()
    texts = ["Dronrish Fundsund joined Geshdrouth Group as a pilot.",
             "Vrermeath Group is a brewing company based in Doushstairsun."]
    spans = CopySpans(tok, texts, "Which company does Dronrish Fundsund work for?")
    assert first_words(tok, spans) == {w for t in texts for w in t.split()}


CHAIN = ["Dronrish Fundsund joined Geshdrouth Group as a pilot.",
         "Geshdrouth Group is a textile company based in Nixtesdro."]


def test_a_memory_a_later_round_found_is_a_hop_without_the_questions_words() -> None:
    """"In which city does Dronrish Fundsund work?": the company's memory shares no word
    with the question, so in one round only the person's line opens a span; when a later
    round of interleave found it (``followed``), its line naming Geshdrouth Group is the
    second hop, and only it opens one."""
    tok = WholeWords()
    question = "In which city does Dronrish Fundsund work?"
    assert first_words(tok, CopySpans(tok, CHAIN, question)) == set(CHAIN[0].split())
    assert first_words(tok, CopySpans(tok, CHAIN, question, followed=[1])) == set(
        CHAIN[1].split())
    assert first_words(tok, CopySpans(tok, CHAIN, question, followed=[0])) == set(
        CHAIN[0].split())  # the found memory names nothing of the best line's


def test_followed_are_the_later_rounds_memories_in_the_order_shown() -> None:
    from datetime import datetime, timedelta, timezone

    from msa_agent.runtime.ask import followed
    from msa_agent.runtime.results import Recalled
    from msa_agent.store import StoredMemory

    def hit(day: int, round_: int) -> Recalled:
        at = datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(days=day)
        memory = StoredMemory(id=str(day), namespace="n", kind="document", text="t",
                              metadata={}, session_id=None, user_id=None, agent_id=None,
                              source_id=None, part=0, created_at=at, token_start=0,
                              n_tokens=1, chunk_start=0, n_chunks=1, content_hash="")
        return Recalled(memory, 1.0, round=round_)

    read = [hit(5, 1), hit(1, 2), hit(3, 1)]  # rank order
    notes, _ = arrange([f"memory {h.memory.id}" for h in read],
                       [h.memory.created_at for h in read])
    for mode in ("text", "chunks"):  # shown as arrange shows them
        assert [notes[i] for i in followed(read, mode)] == [
            n for n in notes if n.endswith("memory 1")]
    assert followed(read, "full") == [1]  # K/V reads keep the rank order


def test_names_are_runs_of_capitalised_words_where_no_sentence_starts() -> None:
    assert _names("User: Stexdror Rithgin met Ann Lee on Monday. Then Kest, left".split()) == {
        ("rithgin",), ("ann", "lee"), ("monday",), ("kest",)}
    assert _names("The Dr. is in".split()) == frozenset()  # "The" opens; "Dr" is short


def test_content_words_leave_out_question_words_and_short_ones() -> None:
    assert content_words("Which garage is my car parked at?") == {"garage", "car", "parked"}
    assert content_words("Who is Kest Vorn? (2025)") == {"kest", "vorn"}


def test_first_token_is_any_line_token_and_stop_only_after_one() -> None:
    spans = CopySpans(Words(), ["w1 w2 w3\nw4 w2 w5"])
    assert sorted(spans.allowed(STOP).tolist()) == [1, 2, 3, 4, 5]  # no stop before a token
    logits = torch.zeros(100)
    logits[2] = 5.0
    assert spans.choose(logits, STOP) == 2
    assert sorted(spans.allowed(STOP).tolist()) == [3, 5, 99]  # what follows w2, or stop


def test_a_line_end_ends_the_answer() -> None:
    spans = CopySpans(Words(), ["w1 w2\nw3 w4"])
    logits = torch.zeros(100)
    logits[2] = 9.0
    logits[3] = 8.0  # w3 would be the best next token, but it starts another line
    assert spans.choose(logits, STOP) == 2
    assert spans.allowed(STOP).tolist() == [99]
    assert spans.choose(logits, STOP) == 99
    assert CopySpans(Words(), ["w1"]).choose(logits, STOP) == 1


def test_without_stop_ids_a_finished_line_ends_the_answer() -> None:
    spans = CopySpans(Words(), ["w1"])
    assert spans.choose(torch.zeros(100), set()) == 1
    assert spans.choose(torch.zeros(100), set()) is None


def test_no_memories_means_free_answers() -> None:
    assert copy_spans(Words(), "extractive", []) is None
    assert copy_spans(Words(), "extractive", ["  \n "]) is None
    assert copy_spans(Words(), "free", ["w1 w2"]) is None
    assert copy_spans(Words(), "extractive", ["w1 w2"]) is not None


lines_st = st.lists(st.lists(st.integers(1, 12), min_size=1, max_size=8), min_size=1,
                    max_size=4)


@settings(max_examples=60, deadline=None)
@given(lines=lines_st, seed=st.integers(0, 10_000))
def test_any_logits_give_a_contiguous_span_of_one_line(lines: list[list[int]],
                                                       seed: int) -> None:
    text = "\n".join(" ".join(f"w{i}" for i in line) for line in lines)
    gen = torch.Generator().manual_seed(seed)
    logits = [torch.randn(100, generator=gen) for _ in range(12)]
    out = run(CopySpans(Words(), [text]), logits)
    assert out and contiguous_in_a_line(out, lines)


NAMES = ["alpha", "bravo", "carol", "delta", "eagle", "fjord"]


@settings(max_examples=60, deadline=None)
@given(lines=st.lists(st.lists(st.sampled_from(NAMES), min_size=1, max_size=6), min_size=1,
                      max_size=5),
       asked=st.sampled_from(NAMES), seed=st.integers(0, 10_000))
def test_with_a_question_any_logits_give_a_span_of_a_line_about_it(
        lines: list[list[str]], asked: str, seed: int) -> None:
    """Lines cut out of a text for a question still give whole, contiguous spans, each of
    a line that holds the asked word (of any line when none does)."""
    tok = WholeWords()
    texts = ["\n".join(" ".join(line) for line in lines[:2]),
             "\n".join(" ".join(line) for line in lines[2:])]
    gen = torch.Generator().manual_seed(seed)
    logits = [torch.randn(100, generator=gen) for _ in range(10)]
    out = run(CopySpans(tok, texts, f"Where is {asked}?"), logits)
    about = [line for line in lines if asked in line] or lines
    assert out and contiguous_in_a_line(out, [tok(" ".join(line))["input_ids"]
                                              for line in about])


def test_greedy_copies_from_the_sources_on_a_tiny_model(tiny_pair) -> None:  # noqa: ANN001
    model, tok = tiny_pair
    sources = ["Alice works for Acme.", "Acme is based in Lisbon."]
    prompt = prompt_ids(tok, "Where is Acme?", sources)
    out = list(greedy(model, prompt, 12, set(), copy=CopySpans(tok, sources)))
    text = tok.decode(out).strip()  # may start at a bare word: same text, other first token
    assert text and any(text in s for s in sources)


FACTS = ["Alice works for Acme.", "Acme is based in Lisbon.", "Bob likes green tea."]


def test_memory_answer_extractive_is_a_span_of_what_it_read(tmp_path: Path, tiny_pair) -> None:
    with Memory.open(tmp_path / "m", model=tiny_pair, chunk_size=8,
                     answer_format="extractive") as mem:
        mem.remember_many(FACTS)
        for read in ("text", "chunks"):
            ans = mem.answer("Where does Alice work?", k=2, read=read, max_new_tokens=8)
            assert ans.text and any(ans.text in fact for fact in FACTS), (read, ans.text)
    with Memory.open(tmp_path / "m", model=tiny_pair) as mem:  # extractive by default
        assert mem.config.answer_format == "extractive"


def test_wrong_answer_format_is_refused(tmp_path: Path, tiny_pair) -> None:
    with pytest.raises((InvalidInputError, ValueError)):
        Memory.open(tmp_path / "m", model=tiny_pair, answer_format="abstractive")


SESSION = ["(2025-03-01) User: My cat is called Kaxbouth Lirkteash.",
           "(2025-04-01) User: The garage is Salris Stirknesh gym."]


def test_snap_fixes_misspelt_names_and_keeps_the_rest() -> None:
    snap = NameSnap(SESSION)
    assert snap("Your cat's name is Kaxboth Lirkteash.") == \
        "Your cat's name is Kaxbouth Lirkteash."
    assert snap("Salaris Stirknesh gym") == "Salris Stirknesh gym"
    assert snap("Cenozoic Era") == "Cenozoic Era"  # nothing close: kept
    assert snap("the kaxboth cat") == "the kaxboth cat"  # not capitalised: not a name
    assert answer_fix("free", SESSION)("Kaxboth") == "Kaxboth"
    assert answer_fix("snap", [])("Kaxboth") == "Kaxboth"  # nothing read: nothing to snap to


words_st = st.lists(st.sampled_from(["Kaxboth", "Lirkteash", "Salaris", "the", "Your", "gym",
                                     "Stirknes", "cat's", "Zzzz"]), max_size=8)


@settings(max_examples=60, deadline=None)
@given(words=words_st, seps=st.lists(st.sampled_from([" ", "\n", ". "]), min_size=8,
                                     max_size=8))
def test_snap_of_a_prefix_between_words_is_a_prefix_of_the_snap(words: list[str],
                                                                seps: list[str]) -> None:
    """What lets a stream show snapped whole words before the answer ends."""
    text = "".join(w + s for w, s in zip(words, seps, strict=False))
    snap = NameSnap(SESSION)
    for cut in [i + 1 for i, c in enumerate(text) if c in " \n"]:
        assert snap(text).startswith(snap(text[:cut]))


def test_memory_answer_snap_streams_the_snapped_text(tmp_path: Path, tiny_pair) -> None:
    with Memory.open(tmp_path / "m", model=tiny_pair, chunk_size=8,
                     answer_format="free") as mem:
        mem.remember_many(FACTS)
        free = mem.answer("Where does Alice work?", k=3, read="text", max_new_tokens=12)
    with Memory.open(tmp_path / "m", model=tiny_pair, answer_format="snap") as mem:
        stream = mem.answer("Where does Alice work?", k=3, read="text", max_new_tokens=12,
                            stream=True)
        pieces = list(stream)
    assert stream.answer is not None
    assert stream.answer.text == NameSnap(FACTS)(free.text)  # dates carry no letters
    assert "".join(pieces).strip() == stream.answer.text


@settings(max_examples=60, deadline=None)
@given(lines=st.lists(st.lists(st.integers(1, 12), min_size=1, max_size=6), min_size=1,
                      max_size=4),
       rows=st.lists(st.lists(st.integers(-2, 2), min_size=100, max_size=100), min_size=1,
                     max_size=5))
def test_choose_is_the_argmax_over_allowed_ties_to_the_lowest_id(lines: list[list[int]],
                                                                 rows: list[list[int]]) -> None:
    """``choose`` skips sorting its candidates; it still picks what an argmax over the
    distinct, ascending ``allowed`` ids picks, ties included (small integer logits tie often)."""
    texts = [" ".join(f"w{i}" for i in line) for line in lines]  # several: unsorted firsts
    spans = CopySpans(Words(), texts + ["\n".join(texts)])
    for row in rows:
        logits = torch.tensor(row, dtype=torch.float32)
        allowed = spans.allowed(STOP)
        expected = int(allowed[logits[allowed].argmax()]) if allowed.numel() else None
        token = spans.choose(logits, STOP)
        assert token == expected
        if token is None or token in STOP:
            break
