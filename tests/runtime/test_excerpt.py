"""Sparse text reading: chunk spans, the matched chunk, ``read="chunks"`` and note order."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msa_agent import Memory
from msa_agent.errors import InvalidInputError
from msa_agent.runtime.answer import (
    EXAMPLE,
    SYSTEM,
    SYSTEM_DATED,
    SYSTEM_DATED_BY_TIME,
    arrange,
    prompt_ids,
)
from msa_agent.runtime.ask import read_notes
from msa_agent.runtime.excerpt import matched_chunk, window

pytestmark = pytest.mark.filterwarnings("ignore::msa_agent.runtime.engine.RoutingQualityWarning")

T0 = datetime(2025, 3, 1, tzinfo=timezone.utc)
LONG = ("The morning was spent on the quarterly budget spreadsheet with the finance team. "
        "Then lunch in the park near the river with colleagues from the design floor. "
        "The violin lesson moved to Thursday at five in the music school on Elm Street. "
        "Evening plans were dinner with an old friend and a long walk home in the rain.")


def spans_of(chunks: list[str]) -> tuple[str, list[tuple[int, int]]]:
    text, spans = "", []
    for c in chunks:
        spans.append((len(text), len(text) + len(c)))
        text += c
    return text, spans


def test_matched_chunk_prefers_the_chunk_with_the_rare_question_word() -> None:
    text, spans = spans_of(["Anna went to the market. ", "Anna has her violin lesson on "
                            "Thursday. ", "Anna cooked dinner."])
    assert matched_chunk(text, spans, "When is Anna's violin lesson?") == 1
    assert matched_chunk(text, spans, "When are the lessons?") == 1  # "lessons" ~ "lesson"


def test_a_word_cut_by_a_chunk_boundary_counts_where_it_starts() -> None:
    text, spans = spans_of(["The lesson is on the vio", "lin at five.", " Dinner later."])
    assert matched_chunk(text, spans, "violin?") == 0


def test_matched_chunk_falls_back_to_routing_when_no_word_matches() -> None:
    text, spans = spans_of(["alpha beta ", "gamma delta ", "epsilon"])
    assert matched_chunk(text, spans, "zeta?", fallback=2) == 2
    assert matched_chunk(text, spans, "zeta?", fallback=9) == 2  # clamped into range


@given(n=st.integers(1, 40), centre=st.integers(0, 39), k=st.integers(0, 3))
def test_window_stays_inside_and_holds_the_centre(n: int, centre: int, k: int) -> None:
    centre = min(centre, n - 1)
    first, last = window(n, centre, k)
    assert 0 <= first <= centre <= last < n and last - first <= 2 * k


def open_mem(path: Path, pair) -> Memory:  # noqa: ANN001
    return Memory.open(path, model=pair, chunk_size=8)


def test_chunk_spans_tile_the_text(tmp_path: Path, tiny_pair) -> None:  # noqa: ANN001
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        engine = mem._engine

        @settings(max_examples=40, deadline=None)
        @given(text=st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)),
                            min_size=1, max_size=300))
        def spans_tile(text: str) -> None:
            spans = engine.chunk_spans(text)
            assert spans[0][0] == 0 and spans[-1][1] == len(text)
            assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
            n = len(engine.tokenizer(text, add_special_tokens=False)["input_ids"])
            assert len(spans) == max(1, -(-n // 8))  # one span per 8-token chunk

        spans_tile()


def test_chunks_read_puts_only_the_matched_window_in_the_prompt(tmp_path: Path,
                                                                 tiny_pair) -> None:
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        mem.remember(LONG, at=T0)
        question = "When is the violin lesson?"
        chunks = mem.answer(question, k=1, read="chunks", max_new_tokens=2)
        text = mem.answer(question, k=1, read="text", max_new_tokens=2)
        hit = mem._engine.recall(question, 1, mem._scope(None, None), 1)[0]
        note = mem._engine.excerpt(hit, question)
    assert chunks.read == "chunks" and "violin" in note and len(note) < len(LONG) / 2
    assert chunks.prompt_tokens < text.prompt_tokens
    assert chunks.memory_tokens < text.memory_tokens


def test_notes_by_time_are_dated_and_oldest_first(tmp_path: Path, tiny_pair) -> None:
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        mem.remember("My car is parked at the Nordgate garage.", at=T0)
        mem.remember("I moved the car: it now stays at the Harbour garage.",
                     at=T0 + timedelta(days=30))
        engine = mem._engine
        hits = engine.recall("Where is my car parked?", 2, mem._scope(None, None), 1)
        by_time, system = read_notes(engine, "Where is my car?", hits, "text", True, "time")
        plain, plain_system = read_notes(engine, "Where is my car?", hits, "text", False, "rank")
        reverse, _ = read_notes(engine, "Where is my car?", hits, "text", False, "reverse")
    assert by_time[0].startswith("(2025-03-01) My car") and "Harbour" in by_time[1]
    assert system == SYSTEM_DATED_BY_TIME and plain_system == SYSTEM
    assert plain == [h.memory.text for h in hits] and reverse == plain[::-1]


def test_prompt_ids_uses_the_given_system_line(tiny_pair) -> None:  # noqa: ANN001
    _, tok = tiny_pair
    assert prompt_ids(tok, "Q?", ["a"], SYSTEM_DATED) != prompt_ids(tok, "Q?", ["a"])


def test_arrange_orders_and_dates_notes() -> None:
    times = [T0 + timedelta(days=d) for d in (5, 1, 5, 3)]
    texts = ["a", "b", "c", "d"]  # best first
    assert arrange(texts, times, "rank", False) == (texts, SYSTEM)
    assert arrange(texts, times, "reverse", False)[0] == ["d", "c", "b", "a"]
    by_time, system = arrange(texts, times, "time", True)
    assert system == SYSTEM_DATED_BY_TIME  # same-day memories keep their rank (stable sort)
    assert arrange(texts, times, "reverse", True)[1] == SYSTEM_DATED
    assert by_time == ["(2025-03-02) b", "(2025-03-04) d", "(2025-03-06) a", "(2025-03-06) c"]
    with pytest.raises(InvalidInputError, match="order"):
        arrange(texts, times, "random", False)


def test_the_worked_example_comes_first_and_only_with_memories(tiny_pair) -> None:  # noqa: ANN001
    _, tok = tiny_pair
    with_example = tok.decode(prompt_ids(tok, "Q?", ["a memory"], SYSTEM, example=True))
    assert with_example.index(EXAMPLE[1]) < with_example.index("a memory")
    assert EXAMPLE[2] in with_example
    assert prompt_ids(tok, "Q?", [], SYSTEM, example=True) == prompt_ids(tok, "Q?", [])


def test_chunk_layouts_are_cached_and_dropped_with_a_forgotten_memory(tmp_path: Path,
                                                                       tiny_pair) -> None:
    """A window read again costs no tokenisation; a forget leaves no deleted text held."""
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        mid = mem.remember(LONG, at=T0)
        engine, question = mem._engine, "When is the violin lesson?"
        hit = engine.recall(question, 1, mem._scope(None, None), 1)[0]
        first = engine.excerpt(hit, question)
        assert engine.excerpt(hit, question) == first
        info = engine._layouts.cache_info()
        assert (info.hits, info.misses, info.currsize) == (1, 1, 1)
        mem.forget(mid)
        assert engine._layouts.cache_info().currsize == 0
