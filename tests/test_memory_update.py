"""Update in place, history, forget of any part, deduplication and upsert (issue 17)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from msa_agent import Memory
from msa_agent.errors import InvalidInputError, UnknownMemoryError
from msa_agent.store import Space, StoreCorruptedError
from msa_agent.store.meta import MetaStore

pytestmark = pytest.mark.filterwarnings("ignore::msa_agent.runtime.engine.RoutingQualityWarning")

LONG = "Alice works for Acme in Lisbon and likes green tea. " * 12  # several parts at 64 tokens


def open_mem(path: Path, pair, **kw) -> Memory:  # noqa: ANN001
    return Memory.open(path, model=pair, **{"chunk_size": 8, "max_doc_tokens": 64, **kw})


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def route_keys(path: Path, mid: str) -> list[np.ndarray]:
    """The stored routing keys of every part of source ``mid``, in order."""
    with Space.open(path, read_only=True) as s:
        parts = sorted(s.find(where={"source_id": mid}), key=lambda m: m.part)
        return s.read("route_k", parts)


def test_forget_of_a_later_part_removes_every_part(tmp_path: Path, tiny_pair) -> None:
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        mid = mem.remember(LONG)
        keep = mem.remember("Paris is the capital of France.")
        parts = mem.list(where={"source_id": mid})
        assert len(parts) >= 3
        assert mem.forget(parts[2].id) == len(parts)
        assert [r.id for r in mem.list()] == [keep]
        assert mem._engine.index.rows == mem.stats().chunks  # noqa: SLF001


def test_update_reencodes_keeps_id_and_time(tmp_path: Path, tiny_pair) -> None:
    new = "Bob likes quick brown foxes. " * 6
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        mid = mem.remember(LONG, metadata={"a": 1, "b": 2})
        before = mem.get(mid)
        later = [r.id for r in mem.list(where={"source_id": mid}) if r.part > 0]
        assert len(later) >= 2
        assert mem.update(later[-1], text=new, metadata={"b": 3}) == mid  # any part's id
        after = mem.get(mid)
        assert after.created_at == before.created_at
        assert after.metadata == {"a": 1, "b": 3}  # merged
        parts = mem.list(where={"source_id": mid})
        assert "".join(p.text for p in parts) == new
        assert not set(later) & {p.id for p in parts}
        assert all(mem.get(p.id).text for p in parts)
        assert not mem.recall("Lisbon Acme green tea", k=5, routing="lexical")
        assert mem._engine.index.rows == mem.stats().chunks  # noqa: SLF001
    with open_mem(tmp_path / "fresh", tiny_pair) as mem:
        fresh = mem.remember(new)
    for got, want in zip(route_keys(tmp_path / "m", mid), route_keys(tmp_path / "fresh", fresh),
                         strict=True):
        np.testing.assert_array_equal(got, want)


def test_update_of_metadata_only_keeps_rows(tmp_path: Path, tiny_pair) -> None:
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        mid = mem.remember(LONG, metadata={"a": 1})
    keys = route_keys(tmp_path / "m", mid)
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        assert mem.update(mid, metadata={"c": "x"}) == mid
        assert {p.metadata["c"] for p in mem.list(where={"source_id": mid})} == {"x"}
        assert [h.id for h in mem.recall("Lisbon", k=1, routing="lexical")]
    for got, want in zip(route_keys(tmp_path / "m", mid), keys, strict=True):
        np.testing.assert_array_equal(got, want)


def test_update_refuses_unknown_and_other_namespace(tmp_path: Path, tiny_pair) -> None:
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        other = mem.remember("theirs", namespace="B")
        mine = mem.remember("mine")
        for bad in ("nope", other):
            with pytest.raises(UnknownMemoryError):
                mem.update(bad, text="x")
        with pytest.raises(InvalidInputError):
            mem.update(mine)
        assert mem.get(other, namespace="B").text == "theirs"


def test_update_is_all_or_nothing(tmp_path: Path, tiny_pair,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        mid = mem.remember("The old version.")

        def crash(*a: object, **k: object) -> None:
            raise StoreCorruptedError("injected crash before the commit")

        monkeypatch.setattr(MetaStore, "commit_add", crash)
        with pytest.raises(StoreCorruptedError):
            mem.update(mid, text="The new version.")
        monkeypatch.undo()
        assert [r.text for r in mem.list()] == ["The old version."]
        assert [h.id for h in mem.recall("old version", k=1)] == [mid]
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        assert [r.text for r in mem.list()] == ["The old version."]
        assert [e.event for e in mem.history(mid)] == ["add"]


def test_history_records_add_update_forget_in_order(tmp_path: Path, tiny_pair) -> None:
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        mid = mem.remember("first text", metadata={"k": 1})
        mem.update(mid, text="second text")
        mem.update(mid, metadata={"j": 2})
        mem.forget(mid)
        with pytest.raises(UnknownMemoryError):
            mem.get(mid)
        events = mem.history(mid)
        assert [e.event for e in events] == ["add", "update", "update", "forget"]
        assert events[0].text_sha256 == sha("first text") and events[0].text_chars == 10
        assert (events[1].old_text_sha256, events[1].text_sha256) == (
            sha("first text"), sha("second text"))
        assert events[1].changed == ["text"] and events[2].changed == ["metadata"]
        assert events[3].old_text_sha256 == sha("second text")
        assert all(e.metadata_keys is None for e in events)  # blanked once forgotten
        assert [e.at for e in events] == sorted(e.at for e in events)
        with pytest.raises(UnknownMemoryError):
            mem.history(mid, namespace="other")
        with pytest.raises(UnknownMemoryError):
            mem.history("never")
    blob = b"".join(p.read_bytes() for p in (tmp_path / "m").glob("meta.sqlite*"))
    assert b"second text" not in blob and b"first text" not in blob


def test_dedupe_returns_the_existing_id(tmp_path: Path, tiny_pair) -> None:
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        a = mem.remember(LONG)
        assert mem.remember(LONG, dedupe=True) == a
        first = mem.remember_many([LONG, "new", "new"], dedupe=True)
        assert first[0] == a and first[1] == first[2]  # one "new" stored
        n = mem.stats().memories
        assert mem.remember_many(["new", "other"], dedupe=True)[0] == first[1]
        assert mem.stats().memories == n + 1  # only "other" is new
        assert mem.remember(LONG) != a  # the default stores again
        assert mem.remember(LONG, namespace="B", dedupe=True) != a  # per namespace
        assert mem.remember(LONG[:-1], dedupe=True) != a


def test_upsert_by_key_updates(tmp_path: Path, tiny_pair) -> None:
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        a = mem.remember("version one", key="doc-1", metadata={"x": 1})
        assert mem.remember("version one", key="doc-1", metadata={"x": 1}) == a
        assert len(mem.history(a)) == 1  # unchanged: nothing written
        assert mem.remember("version two", key="doc-1", metadata={"y": 2}) == a
        assert [(r.id, r.text, r.metadata) for r in mem.list()] == [
            (a, "version two", {"y": 2})]  # replaced, metadata too
        b = mem.remember("version one", key="doc-1", namespace="B")
        assert b != a
        with pytest.raises(InvalidInputError, match="twice"):
            mem.remember_many([{"text": "x", "key": "k"}, {"text": "y", "key": "k"}])
        with pytest.raises(InvalidInputError):
            mem.remember("x", key="")
    with open_mem(tmp_path / "m", tiny_pair) as mem:
        assert mem.remember("version three", key="doc-1") == a
        assert [e.event for e in mem.history(a)] == ["add", "update", "update"]
        mem.forget(a)
        assert mem.remember("version four", key="doc-1") != a
