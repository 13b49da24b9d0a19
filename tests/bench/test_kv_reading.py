"""The chunk-window K/V variant of ``bench.kv_reading`` reads the tokens ``read="chunks"``
reads as text."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from msa_agent import Memory
from msa_agent.bench.kv_reading import window_rows
from msa_agent.model.text import query_ids
from msa_agent.runtime.results import Scope

pytestmark = pytest.mark.filterwarnings("ignore::msa_agent.runtime.engine.RoutingQualityWarning")


def test_window_rows_are_the_excerpt(tmp_path: Path, tiny_pair) -> None:  # noqa: ANN001
    filler = " ".join(f"note{i} about the weather" for i in range(20))
    text = f"{filler} and the violin sits in the attic. {filler}"
    with Memory.open(tmp_path / "m", tiny_pair, routing="own_qk", chunk_size=8,
                     max_doc_tokens=512) as mem:
        mem.remember(text)
        engine = mem._engine
        hit = engine.recall("where is the violin", 1, Scope(namespace="default"), 1)[0]
        a, b = window_rows(engine, hit, "where is the violin")
        assert a % 8 == 0 and 0 < b - a <= 3 * 8 and b <= hit.memory.n_tokens
        ids = query_ids(engine.tokenizer, text, 512)  # the document's tokens, prefix counted
        assert len(ids) == hit.memory.n_tokens
        window = engine.tokenizer.decode(ids[a:b], skip_special_tokens=True)
        assert "violin" in window
        assert " ".join(window.split()) == " ".join(engine.excerpt(hit, "where is the "
                                                                    "violin").split())


def open_chat(path: Path, pair) -> Memory:  # noqa: ANN001
    """A chat-framed space keeping every layer's K/V, as the bench's K/V variants read."""
    return Memory.open(path, pair, chunk_size=8, keep_full_kv=True, full_kv_layers="all",
                       kv_frame="chat")


FACTS = ["Alice works for Acme in the city.", "Acme is based in Lisbon by the sea.",
         "Bob likes green tea."]


@pytest.mark.parametrize("windows", [False, True])
def test_kv_answers_are_decoded_in_the_answer_format(tmp_path: Path, tiny_pair,  # noqa: ANN001
                                                     windows: bool) -> None:
    """Every variant decodes as ``Memory.answer`` does: an extractive K/V answer is a span of
    what was read (the memories, or their windows' text)."""
    from msa_agent.bench.kv_reading import kv_answer

    question = "Where is Acme based?"
    with open_chat(tmp_path / "m", tiny_pair) as mem:
        mem.remember_many(FACTS)
        engine = mem._engine
        hits = engine.recall(question, 2, Scope(namespace="default"), 1)
        shown = ([engine.excerpt(h, question) for h in hits] if windows
                 else [h.memory.text for h in hits])
        answer, n_prompt = kv_answer(mem, "sequential", question, hits, "extractive", windows)
        assert n_prompt > 0
        assert answer and any(answer in " ".join(s.split()) for s in shown)


def test_an_unknown_variant_is_refused_before_any_work(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from msa_agent.bench.kv_reading import main

    app = typer.Typer()
    app.command()(main)
    res = CliRunner().invoke(app, ["--work", str(tmp_path / "w"), "--variant", "full K/V, typo",
                                   "--out", str(tmp_path / "o.json")])
    assert res.exit_code == 2 and "unknown --variant" in res.output
    assert not (tmp_path / "w").exists() and not (tmp_path / "o.json").exists()


def test_a_memory_encoded_alone_is_its_stored_kv(tmp_path: Path, tiny_pair) -> None:  # noqa: ANN001
    """The diagnostic "encoded alone" variants encode tokens after the frame's head as ingest
    does: a whole memory encoded so gives its stored chat-framed K/V."""
    from msa_agent.bench.kv_reading import doc_ids, encode_alone

    with open_chat(tmp_path / "m", tiny_pair) as mem:
        mem.remember_many(FACTS)
        engine = mem._engine
        hit = engine.recall("Where is Acme based?", 1, Scope(namespace="default"), 1)[0]
        ids = doc_ids(engine, hit)
        assert len(ids) == hit.memory.n_tokens
        k, v = encode_alone(engine, ids)
        (sk, sv), = engine.read_kv("full", [hit.memory])
        torch.testing.assert_close(k, sk, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(v, sv, atol=1e-4, rtol=1e-4)


def test_whole_rows_read_as_read_full(tmp_path: Path, tiny_pair) -> None:  # noqa: ANN001
    """The "whole" layout (every stored row, laid out as windows are) is ``read="full"``, so
    its key-scaled variants differ from ``read="full"`` by the scale alone."""
    from msa_agent.bench.kv_reading import kv_answer

    question = "Where is Acme based?"
    with open_chat(tmp_path / "m", tiny_pair) as mem:
        mem.remember_many(FACTS)
        hits = mem._engine.recall(question, 2, Scope(namespace="default"), 1)
        full = kv_answer(mem, "sequential", question, hits, "free")
        assert kv_answer(mem, "sequential", question, hits, "free", "whole") == full


def test_the_chunk_window_variant_is_the_runtime_s_kv_chunks_read(tmp_path: Path,
                                                                   tiny_pair) -> None:  # noqa: ANN001
    """The bench's "chunk K/V, chat, sequential" rows are what ``read="kv_chunks"`` reads:
    the same memory K/V, start and prompt."""
    from msa_agent.bench.kv_reading import window_kv
    from msa_agent.runtime.answer import Reader

    filler = " ".join(f"note{i} about the weather" for i in range(12))
    texts = [f"{filler} and Acme is based in Lisbon. {filler}", f"Alice works for Acme. {filler}"]
    question = "Where is Acme based?"
    with open_chat(tmp_path / "m", tiny_pair) as mem:
        mem.remember_many(texts)
        engine = mem._engine
        hits = engine.recall(question, 2, Scope(namespace="default"), 1)
        every = list(range(engine.shape.n_layers))
        bench = engine.kv_frame.read(engine.lm.model, lambda: engine.encoder.frame_kv(every),
                                     engine.tokenizer, question,
                                     window_kv(engine, hits, question, "rows"),
                                     engine.full_layers)
        reader = Reader(engine, question, [h.memory for h in hits], "kv_chunks",
                        rows=[engine.kv_window(h, question)[1] for h in hits])
    assert len(hits) == 2 and reader.start == bench[1] and reader.prompt == bench[2]
    for layer in every:
        torch.testing.assert_close(reader.memory.k[layer], bench[0].k[layer])
        torch.testing.assert_close(reader.memory.v[layer], bench[0].v[layer])
