"""Any value for any argument of the public calls: either it works or it raises one of our
errors (``MsaError``), and a refused call changes nothing stored (issue 16)."""

from __future__ import annotations

import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msa_agent import Memory
from msa_agent.errors import InvalidInputError, MsaError
from msa_agent.model.text import MAX_TEXT_CHARS

pytestmark = pytest.mark.filterwarnings("ignore::msa_agent.runtime.engine.RoutingQualityWarning")

TEXTS = ["Paris is the capital of France.", "Alice works for Acme in Lisbon."]
scalar = st.one_of(st.none(), st.booleans(), st.integers(-2, 3), st.integers(),
                   st.floats(allow_nan=True), st.text(max_size=12), st.binary(max_size=6),
                   st.sampled_from(["", " ", "\ud800", "a\udfffb", "bin\x00", "auto", "msa"]),
                   st.datetimes(), st.just(object()))
ANY = st.one_of(scalar, st.lists(scalar, max_size=3), st.tuples(scalar),
                st.dictionaries(st.text(max_size=6), scalar, max_size=3))
NOW = datetime(2024, 1, 1, tzinfo=timezone.utc)
LIVE = "<a live id>"  # replaced by a stored memory's id when the call runs
# Each call's arguments, with values that work; one of them (or none) is then swapped for ANY.
SIGNATURES: dict[str, dict[str, st.SearchStrategy]] = {
    "remember": dict(text=st.sampled_from(TEXTS), kind=st.sampled_from(["note", "document"]),
                     metadata=st.sampled_from([None, {"topic": "x"}]),
                     session_id=st.sampled_from([None, "s", "t"]),
                     namespace=st.sampled_from([None, "a", "b"]),
                     at=st.sampled_from([None, NOW]), key=st.sampled_from([None, "k1", "k2"]),
                     dedupe=st.booleans()),
    "remember_many": dict(items=st.lists(st.sampled_from(TEXTS), max_size=3),
                          dedupe=st.booleans()),
    "update": dict(id=st.sampled_from(["f" * 32, LIVE]), text=st.sampled_from([None, *TEXTS]),
                   metadata=st.sampled_from([None, {"topic": "y"}]),
                   namespace=st.sampled_from([None, "a", "b"])),
    "history": dict(id=st.sampled_from(["f" * 32, LIVE]),
                    namespace=st.sampled_from([None, "a", "b"])),
    "recall": dict(query=st.sampled_from(TEXTS), k=st.sampled_from([None, 1, 3]),
                   where=st.sampled_from([None, {"kind": "note"}, {"session_id": ["s", "t"]}]),
                   namespace=st.sampled_from([None, "a", "b"]), hops=st.sampled_from([1, 2]),
                   routing=st.sampled_from([None, "msa", "lexical"]),
                   since=st.sampled_from([None, NOW]), until=st.sampled_from([None, NOW])),
    "forget": dict(id=st.sampled_from([None, None, "f" * 32, LIVE]),
                   where=st.sampled_from([None, {"kind": "note"}, {"session_id": "t"}]),
                   namespace=st.sampled_from([None, "a", "b"]), all=st.just(False)),
    "list": dict(namespace=st.sampled_from([None, "a", "b"]),
                 where=st.sampled_from([None, {"kind": "note"}]),
                 limit=st.sampled_from([None, 1, 5]), offset=st.sampled_from([0, 1]),
                 newest_first=st.booleans()),
    "answer": dict(question=st.sampled_from(TEXTS), k=st.sampled_from([None, 2]),
                   where=st.sampled_from([None, {"kind": "note"}]),
                   namespace=st.sampled_from([None, "b"]), hops=st.sampled_from([1, 2]),
                   read=st.sampled_from(["auto", "text", "chunks"]),
                   max_new_tokens=st.sampled_from([1, 2]), stream=st.booleans(),
                   routing=st.sampled_from([None, "msa"])),
    "get": dict(id=st.sampled_from(["f" * 32, LIVE]), namespace=st.sampled_from([None, "a", "b"])),
}


@st.composite
def calls(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A call by name with keyword arguments: all that work (half the time), or one of them
    replaced by ANY."""
    name = draw(st.sampled_from(sorted(SIGNATURES)))
    kwargs = {arg: draw(valid) for arg, valid in SIGNATURES[name].items()}
    bad = draw(st.sampled_from([None] * len(kwargs) + list(kwargs)))
    if bad is not None:
        kwargs[bad] = draw(ANY)
    return name, kwargs


def snapshot(mem: Memory) -> tuple[Any, ...]:
    """Everything stored (rows of every namespace) and resident (the index)."""
    rows = mem._engine.find(None, limit=None)
    index = mem._engine.index
    return (sorted((m.id, m.namespace, m.text, m.kind, repr(m.metadata), m.session_id,
                    m.n_chunks) for m in rows), list(index.doc_ids), index.rows)


def call(mem: Memory, name: str, kwargs: dict[str, Any]) -> None:
    """Run one call; a refusal must be one of ours and leave everything as it was."""
    before = snapshot(mem)
    if kwargs.get("id") == LIVE:
        kwargs["id"] = next((m[0] for m in before[0]), "f" * 32)
    try:
        out = getattr(mem, name)(**kwargs)
        if name == "answer" and kwargs["stream"] is True:
            list(out)  # a stream runs when iterated
    except MsaError:
        assert snapshot(mem) == before, f"refused {name} changed stored data"


EXAMPLES = 2 * int(os.environ.get("MSA_HYPOTHESIS_EXAMPLES", "30"))  # larger for one-off runs


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(seq=st.lists(calls(), min_size=1, max_size=6))
def test_any_value_gives_our_error_or_works(tiny_llama, tokenizer, seq) -> None:  # noqa: ANN001
    with tempfile.TemporaryDirectory() as tmp:
        with Memory.open(Path(tmp) / "m", model=(tiny_llama, tokenizer), namespace="a",
                         chunk_size=8) as mem:
            mem.remember_many([{"text": t, "kind": "note", "session_id": "s"} for t in TEXTS])
            for name, kwargs in seq:
                call(mem, name, kwargs)


@pytest.mark.parametrize("items", ["abc", b"abc", {"text": "abc"}, 42, None])
def test_remember_many_refuses_a_single_item(tmp_path: Path, tiny_pair, items) -> None:
    with Memory.open(tmp_path / "m", model=tiny_pair) as mem:
        with pytest.raises(InvalidInputError):
            mem.remember_many(items)
        assert mem.stats().memories == 0


@pytest.mark.parametrize("method", ["recall", "answer", "list", "forget"])
def test_where_as_a_string_is_our_error(tmp_path: Path, tiny_pair, method) -> None:
    with Memory.open(tmp_path / "m", model=tiny_pair) as mem:
        mem.remember(TEXTS[0])
        args = () if method in ("list", "forget") else ("capital",)
        with pytest.raises(InvalidInputError, match="where"):
            getattr(mem, method)(*args, where="kind=note")
        assert mem.stats().memories == 1


@pytest.mark.parametrize("bad", ["lone \ud800 surrogate", "x" * (MAX_TEXT_CHARS + 1)])
def test_unencodable_or_too_long_text_is_refused_before_work(tmp_path: Path, tiny_pair,
                                                             bad) -> None:
    with Memory.open(tmp_path / "m", model=tiny_pair) as mem:
        for fn in (mem.remember, lambda t: mem.remember_many([TEXTS[0], t]), mem.recall):
            with pytest.raises(InvalidInputError):
                fn(bad)
        assert mem.stats().memories == 0


def test_plugins_refuse_a_bad_filter_with_our_error(tmp_path: Path, tiny_pair) -> None:
    """The LangChain/LangGraph plugins pass filters on: a string is our error, not an
    AttributeError from deep inside."""
    pytest.importorskip("langgraph")
    from msa_agent.integrations import MsaRetriever, MsaStore

    with Memory.open(tmp_path / "m", model=tiny_pair) as mem:
        store = MsaStore(mem)
        store.put(("n",), "k", {"text": TEXTS[0]})
        with pytest.raises(InvalidInputError, match="filter"):
            store.search(("n",), filter="kind=note")  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError, match="where"):
            MsaRetriever(memory=mem).invoke("capital", where="kind=note")
        assert len(mem.list(namespace=store.encode(("n",)))) == 1


def test_a_k_past_64_bits_answers(tmp_path: Path, tiny_pair) -> None:  # noqa: ANN001
    """The example hypothesis found: a k past SQL's 64 bits reached SQLite's LIMIT."""
    with Memory.open(tmp_path / "m", tiny_pair, routing="own_qk") as mem:
        mem.remember("Paris is the capital of France.")
        assert mem.recall("Paris is the capital of France.", k=2**63)
        assert mem.answer("Paris is the capital of France.", k=2**63, max_new_tokens=1)
