"""Expiring memories (issue 17): ``remember(expires_at=/ttl=)`` is honoured by recall,
answer and list, kept by update, carried by export/import, and removed by compact."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from msa_agent import Memory
from msa_agent.errors import InvalidInputError

pytestmark = pytest.mark.filterwarnings("ignore::msa_agent.runtime.engine.RoutingQualityWarning")

PAST = datetime(2020, 1, 1, tzinfo=timezone.utc)
FUTURE = datetime(2999, 1, 1, tzinfo=timezone.utc)
NOTES = ["The spare key is under the blue flowerpot.", "The spare key moved to the garage.",
         "Lunch is at noon on Fridays."]


def open_mem(path: Path, pair, **kw) -> Memory:  # noqa: ANN001
    return Memory.open(path, model=pair, chunk_size=8, max_doc_tokens=64, **kw)


def fill(mem: Memory) -> tuple[str, str, str]:
    gone = mem.remember(NOTES[0], expires_at=PAST)
    later = mem.remember(NOTES[1], expires_at=FUTURE)
    never = mem.remember(NOTES[2])
    return gone, later, never


@pytest.mark.parametrize("routing", ["hybrid", "msa", "lexical"])
def test_recall_leaves_out_expired_memories(tmp_path: Path, tiny_pair, routing: str) -> None:
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        gone, later, never = fill(mem)
        ids = {h.id for h in mem.recall("spare key flowerpot", k=10, routing=routing)}
        assert gone not in ids and later in ids
        narrowed = mem.recall("spare key", k=10, routing=routing, where={"kind": "document"})
        assert gone not in {h.id for h in narrowed}


def test_list_get_and_answer(tmp_path: Path, tiny_pair) -> None:
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        gone, later, never = fill(mem)
        assert [r.id for r in mem.list()] == [later, never]
        assert [r.id for r in mem.list(include_expired=True)] == [gone, later, never]
        assert mem.get(gone).expires_at == PAST  # still stored until compaction
        assert mem.get(later).expires_at == FUTURE and mem.get(never).expires_at is None
        used = mem.answer("Where is the spare key?", k=5, read="text", max_new_tokens=2)
        assert gone not in {h.id for r in used.rounds for h in r.memories}


def test_ttl_counts_from_now_and_update_keeps_it(tmp_path: Path, tiny_pair) -> None:
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        before = datetime.now(timezone.utc)
        mid = mem.remember(NOTES[0], ttl=3600)
        exp = mem.get(mid).expires_at
        assert exp is not None and before + timedelta(hours=1) <= exp <= (
            datetime.now(timezone.utc) + timedelta(hours=1))
        mem.update(mid, text=NOTES[1])
        assert mem.get(mid).expires_at == exp
        mem.remember(NOTES[2], key="k", ttl=timedelta(days=1))
        again = mem.remember(NOTES[2], key="k")  # an upsert sets expiry anew: now never
        assert mem.get(again).expires_at is None


def test_compact_deletes_expired_and_records_it(tmp_path: Path, tiny_pair) -> None:
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        gone, later, never = fill(mem)
        sizes = mem.compact()
        assert sizes["expired"] == 1
        assert [r.id for r in mem.list(include_expired=True)] == [later, never]
        assert [e.event for e in mem.history(gone)] == ["add", "forget"]
        assert mem.compact()["expired"] == 0
        assert mem._engine.index.rows == mem.stats().chunks  # noqa: SLF001


def test_export_import_carries_expiry(tmp_path: Path, tiny_pair) -> None:
    with open_mem(tmp_path / "a", tiny_pair) as mem:
        gone, later, never = fill(mem)
        mem.export(tmp_path / "bundle")
    with open_mem(tmp_path / "b", tiny_pair) as mem:
        mem.import_(tmp_path / "bundle")
        assert {r.id: r.expires_at for r in mem.list(include_expired=True)} == {
            gone: PAST, later: FUTURE, never: None}
        assert gone not in {h.id for h in mem.recall("spare key", k=10)}


def test_a_reader_honours_expiry(tmp_path: Path, tiny_pair) -> None:
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        gone, later, _ = fill(mem)
        with open_mem(tmp_path / "m", tiny_pair, read_only=True) as ro:
            assert gone not in {h.id for h in ro.recall("spare key", k=10)}
            assert later in {r.id for r in ro.list()}


@pytest.mark.parametrize("bad", [
    {"ttl": 0}, {"ttl": -5}, {"ttl": float("nan")}, {"ttl": float("inf")}, {"ttl": "1d"},
    {"ttl": True}, {"ttl": 1e300}, {"expires_at": "2030-01-01"},
    {"expires_at": FUTURE, "ttl": 60}, {"ttl": timedelta(seconds=-1)}])
def test_bad_expiry_is_refused_and_stores_nothing(tmp_path: Path, tiny_pair, bad: dict) -> None:
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        with pytest.raises(InvalidInputError):
            mem.remember("anything at all", **bad)
        with pytest.raises(InvalidInputError):
            mem.remember_many([{"text": "x"}, {"text": "y", **bad}])
        assert mem.list(include_expired=True) == []
