"""AsyncMemory on a tiny random model: the same results and errors as Memory, from coroutines."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import pytest

from msa_agent import AsyncMemory, Memory
from msa_agent.errors import InvalidInputError, UnknownMemoryError

pytestmark = pytest.mark.filterwarnings("ignore::msa_agent.runtime.engine.RoutingQualityWarning")

NOTES = ["Paris is the capital of France.", "Alice works for Acme in Lisbon.",
         "Bob likes green tea.", "The deploy host is called vrai-thorn-7."]
SETTINGS = {"chunk_size": 8, "max_doc_tokens": 64}


def public_methods(cls: type) -> set[str]:
    return {n for n, v in vars(cls).items()
            if callable(v) and not n.startswith("_") and not isinstance(v, staticmethod)}


def test_every_memory_method_has_a_coroutine() -> None:
    """A method added to Memory must be added here too (or this fails)."""
    missing = public_methods(Memory) - set(dir(AsyncMemory))
    assert not missing, f"AsyncMemory lacks {sorted(missing)}"
    for name in public_methods(Memory) - {"open", "close"}:
        method = getattr(AsyncMemory, name)
        assert inspect.iscoroutinefunction(method), name
        if name != "answer":  # answer takes the same arguments, passed through
            assert inspect.signature(method) == inspect.signature(getattr(Memory, name))


async def test_async_results_equal_sync_results(tmp_path: Path, tiny_pair) -> None:
    async with await AsyncMemory.open(tmp_path / "m", tiny_pair, **SETTINGS) as mem:
        ids = await mem.remember_many(NOTES)
        one = await mem.remember("Carol plays violin on Tuesdays.", kind="session")
        hits = await mem.recall("capital of France", k=3, explain=True)
        many = await mem.recall_many(["capital of France"], k=3)
        record = await mem.get(ids[0])
        listed = await mem.list()
        stats = await mem.stats()
        sync_hits = mem.memory.recall("capital of France", k=3, explain=True)
    assert [(h.id, h.score) for h in hits] == [(h.id, h.score) for h in sync_hits]
    assert [(h.id, h.score) for h in many[0]] == [(h.id, h.score) for h in sync_hits]
    assert record.text == NOTES[0]
    assert [m.id for m in listed] == [*ids, one]
    assert stats.memories == 5


async def test_concurrent_coroutines_do_not_block_the_loop(tmp_path: Path, tiny_pair) -> None:
    """Recalls and writes gathered together all finish and see every acknowledged write."""
    async with await AsyncMemory.open(tmp_path / "m", tiny_pair, **SETTINGS) as mem:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            for _ in range(5):
                ticks += 1
                await asyncio.sleep(0)

        writes = [mem.remember(f"note {i}: {t}") for i, t in enumerate(NOTES)]
        reads = [mem.recall("Lisbon", k=2) for _ in range(3)]
        *ids, _ = await asyncio.gather(*writes, *reads, ticker())
        ids = ids[: len(NOTES)]
        assert ticks == 5
        assert {m.id for m in await mem.list()} == set(ids)


async def test_answer_and_stream_match_memory(tmp_path: Path, tiny_pair) -> None:
    async with await AsyncMemory.open(tmp_path / "m", tiny_pair, **SETTINGS) as mem:
        await mem.remember_many(NOTES)
        whole = await mem.answer("Who likes tea?", k=2, max_new_tokens=6)
        stream = await mem.answer("Who likes tea?", k=2, max_new_tokens=6, stream=True)
        pieces = [p async for p in stream]
    assert "".join(pieces) == stream.answer.text == whole.text
    assert stream.answer.read == whole.read


async def test_errors_are_memorys_errors(tmp_path: Path, tiny_pair) -> None:
    async with await AsyncMemory.open(tmp_path / "m", tiny_pair, **SETTINGS) as mem:
        with pytest.raises(InvalidInputError):
            await mem.recall("")
        with pytest.raises(UnknownMemoryError):
            await mem.get("no-such-id")
        with pytest.raises(InvalidInputError):
            await mem.remember("")
        assert await mem.list() == []
