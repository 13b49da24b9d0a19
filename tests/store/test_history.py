"""History, keys and replace-in-place of ``Space`` (schema 3)."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_helpers import FP, SPECS, make_data

from msa_agent.store import NewMemory, Space, StoreCorruptedError, StoreInputError
from msa_agent.store.meta import SCHEMA_VERSION, MetaStore


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def source(texts: list[str], sid: str, **kw: object) -> list[NewMemory]:
    """The parts of one source: ids ``sid``, ``sid-1``, ...; linked by ``source_id``."""
    return [NewMemory(text=t, id=sid if i == 0 else f"{sid}-{i}", source_id=sid, part=i,
                      n_chunks=1, n_tokens=2, **kw)  # type: ignore[arg-type]
            for i, t in enumerate(texts)]


def put(space: Space, mems: list[NewMemory], replace: tuple[str, ...] = ()) -> list[str]:
    return space.add(mems, [make_data(m, i) for i, m in enumerate(mems)], replace=replace)


def test_add_replace_delete_are_recorded_in_order(space: Space) -> None:
    put(space, source(["alpha ", "beta"], "s1", metadata={"a": 1}))
    put(space, source(["gamma"], "s1", metadata={"a": 1, "b": 2}), replace=("s1",))
    assert [m.id for m in space.find()] == ["s1"]
    assert space.delete(["s1"]) == 1
    add, upd, gone = space.history("s1")
    assert (add.event, add.text_hash, add.text_chars, add.parts) == (
        "add", sha("alpha beta"), 10, 2)
    assert (upd.event, upd.old_text_hash, upd.text_hash, upd.parts) == (
        "update", sha("alpha beta"), sha("gamma"), 1)
    assert upd.changed == ["text", "metadata", "created_at"]  # none given: now, each time
    assert (gone.event, gone.old_text_hash, gone.text_hash) == ("forget", sha("gamma"), None)
    assert [e.metadata_keys for e in (add, upd, gone)] == [None, None, None]  # blanked
    assert add.at <= upd.at <= gone.at
    assert space.history("nope") == []


def test_replace_keeps_ids_and_wipes_the_old_version(space: Space, space_path: Path) -> None:
    put(space, source(["the zanzibar secret ", "part two"], "s1"))
    old = space.get_many(["s1", "s1-1"])
    put(space, source(["new text"], "s1"), replace=("s1",))
    assert [m.text for m in space.find()] == ["new text"]
    for spec in SPECS:  # the old rows are zeroed
        for got in space.read(spec.name, old):
            assert not got.any()
    blob = b"".join(p.read_bytes() for p in space_path.glob("meta.sqlite*"))
    assert b"zanzibar" not in blob


def test_replace_is_all_or_nothing(space: Space, monkeypatch: pytest.MonkeyPatch) -> None:
    put(space, source(["old one"], "s1"))

    def crash(*a: object, **k: object) -> None:
        raise StoreCorruptedError("injected")

    monkeypatch.setattr(MetaStore, "commit_add", crash)
    with pytest.raises(StoreCorruptedError):
        put(space, source(["new one"], "s1"), replace=("s1",))
    monkeypatch.undo()
    (m,) = space.find()
    assert m.text == "old one"
    np.testing.assert_array_equal(space.read("route_k", [m])[0],
                                  make_data(source(["x"], "s1")[0], 0)["route_k"])
    assert [e.event for e in space.history("s1")] == ["add"]


def test_reused_id_needs_replace(space: Space) -> None:
    put(space, source(["one"], "s1"))
    with pytest.raises(StoreInputError, match="already exists"):
        put(space, source(["two"], "s1"))


def test_keys_name_a_source_per_namespace(space: Space) -> None:
    m = source(["keyed"], "s1")[0]
    put(space, [NewMemory(**{**m.__dict__, "key": "file.md"})])
    assert space.keyed("default", "file.md") == "s1"
    assert space.keyed("other", "file.md") is None
    put(space, source(["keyed again"], "s1", key="file.md"), replace=("s1",))
    assert space.keyed("default", "file.md") == "s1"
    space.delete(["s1"])
    assert space.keyed("default", "file.md") is None


def test_with_hash_finds_first_parts(space: Space) -> None:
    put(space, source(["same", "tail"], "s1") + source(["same"], "s2"))
    assert [m.id for m in space.with_hash("default", sha("same"))] == ["s1", "s2"]
    assert space.with_hash("other", sha("same")) == []


def test_version_2_space_gets_history_at_write_open(space_path: Path) -> None:
    Space.create(space_path, FP, SPECS, durable=False).close()
    with sqlite3.connect(space_path / "meta.sqlite") as con:
        con.execute("DROP TABLE history")
        con.execute("DROP TABLE memory_keys")
        con.execute("DROP TABLE expiries")
        con.execute("UPDATE schema_version SET version = 2")
    con.close()
    with Space.open(space_path, read_only=True) as ro:
        assert ro.history("s1") == [] and ro.keyed("default", "k") is None
    with Space.open(space_path, FP) as s:
        put(s, source(["after upgrade"], "s1", key="k"))
        assert [e.event for e in s.history("s1")] == ["add"]
        assert s.keyed("default", "k") == "s1"
    with sqlite3.connect(space_path / "meta.sqlite") as con:
        assert con.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    con.close()


OPS = st.lists(st.tuples(st.sampled_from(["add", "update", "forget"]), st.integers(0, 2),
                         st.lists(st.sampled_from(["a ", "b ", "c"]), min_size=1, max_size=3)),
               max_size=12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_history_matches_a_model(tmp_path: Path, ops: list[tuple[str, int, list[str]]]) -> None:
    """Random adds, updates and forgets of 3 sources: each source's history is exactly the
    model's list of (event, old hash, new hash), and holds no text."""
    path = tmp_path / f"s{abs(hash(str(ops)))}"
    model: dict[str, list[tuple[str, str | None, str | None]]] = {}
    live: dict[str, str] = {}
    with Space.create(path, FP, SPECS, durable=False) as space:
        for op, n, texts in ops:
            sid, text = f"src{n}", "".join(texts)
            if op == "forget" and sid in live:
                space.delete([m.id for m in space.find(where={"source_id": sid})])
                model[sid].append(("forget", sha(live.pop(sid)), None))
            elif op != "forget":
                old = live.get(sid)
                put(space, source(texts, sid), replace=(sid,) if old is not None else ())
                model.setdefault(sid, []).append(
                    ("update" if old is not None else "add", old and sha(old), sha(text)))
                live[sid] = text
        for sid, want in model.items():
            got = [(e.event, e.old_text_hash, e.text_hash) for e in space.history(sid)]
            assert got == want


# The writer replaces source "src" (3 parts) by version i, again and again, reporting each
# replace that returned; it is SIGKILLed at a random moment.
REPLACER = """
import sys
from store_helpers import FP, make_data
from msa_agent.store import NewMemory, Space

with Space.open(sys.argv[1], FP, durable=False) as s:
    for i in range(1, 100_000):
        news = [NewMemory(text=f"v{i}p{j} ", id="src" if j == 0 else f"src-{i}-{j}",
                          source_id="src", part=j, n_chunks=1, n_tokens=2) for j in range(3)]
        s.add(news, [make_data(m, 10 * i + j) for j, m in enumerate(news)], replace=["src"])
        print("replaced", i, flush=True)
"""


def test_sigkill_mid_replace_leaves_one_whole_version(space_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from lexical_helpers import assert_fts_consistent

    with Space.create(space_path, FP, SPECS, durable=False) as s:
        news = [NewMemory(text=f"v0p{j} ", id="src" if j == 0 else f"src-0-{j}",
                          source_id="src", part=j, n_chunks=1, n_tokens=2) for j in range(3)]
        s.add(news, [make_data(m, j) for j, m in enumerate(news)])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    done = 0  # replaces reported by all runs
    for run, seen in enumerate((3, 11), 1):
        proc = subprocess.Popen([sys.executable, "-c", REPLACER, str(space_path)],
                                stdout=subprocess.PIPE, text=True, env=env)
        assert proc.stdout is not None
        lines = [proc.stdout.readline().strip() for _ in range(seen)]
        time.sleep(0.01 * run)
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        last = int([*lines, *out.splitlines()][-1].split()[1])
        done += last
        assert_fts_consistent(space_path)
        with Space.open(space_path, FP) as s:
            parts = sorted(s.find(), key=lambda m: m.part)
            (version,) = {m.text.split("p")[0] for m in parts}  # one version, never a mix
            v = int(version[1:])
            assert len(parts) == 3 and v in (last, last + 1)
            for j, (m, got) in enumerate(zip(parts, s.read("route_k", parts), strict=True)):
                want = make_data(m, 10 * v + j if v else j)["route_k"]
                np.testing.assert_array_equal(got, want)
            events = [e.event for e in s.history("src")]  # one per committed replace
            assert events[0] == "add" and set(events[1:]) <= {"update"}
            assert done <= len(events) - 1 <= done + run  # each run: one unreported at most
