"""Time: ``since``/``until`` on find, count and lexical_search; explicit ``created_at`` kept."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from lexical_helpers import add_texts, assert_fts_consistent
from store_helpers import FP, SPECS, make_data, mem

from msa_agent.store import InvalidQueryError, NewMemory, Space

T0 = datetime(2021, 3, 1, 12, 0, tzinfo=timezone.utc)
DAY = timedelta(days=1)


def _dated(space: Space, n: int) -> list[str]:
    """Memory i is about "deadline" and was created at T0 + i days."""
    return [add_texts(space, [f"deadline moved, version {i}"], created_at=T0 + i * DAY)[0]
            for i in range(n)]


def test_since_until_half_open_on_every_read(space: Space) -> None:
    ids = _dated(space, 5)
    since, until = T0 + DAY, T0 + 3 * DAY  # days 1 and 2: since inclusive, until exclusive
    assert [m.id for m in space.find(since=since, until=until)] == ids[1:3]
    assert space.count(since=since, until=until) == 2
    hits = space.lexical_search("deadline", 10, "default", since=since, until=until)
    assert {h[0] for h in hits} == set(ids[1:3])
    assert space.count(since=T0 + 4 * DAY) == 1 and space.count(until=T0) == 0
    assert [m.id for m in space.find(order="-created_at", since=since)] == ids[:0:-1]


def test_time_filter_applies_before_top_k(space: Space) -> None:
    ids = _dated(space, 6)
    add_texts(space, ["deadline deadline deadline"] * 5, created_at=T0 - DAY)  # better BM25
    hits = space.lexical_search("deadline", 2, None, since=T0 + 4 * DAY)
    assert {h[0] for h in hits} == set(ids[4:])


def test_equal_scores_rank_newer_first(space: Space) -> None:
    ids = _dated(space, 4)
    hits = space.lexical_search("deadline moved", 4, None)
    assert [h[0] for h in hits] == ids[::-1]


def test_naive_and_other_zones_mean_utc(space: Space) -> None:
    _dated(space, 5)
    cet = timezone(timedelta(hours=1))
    naive = (T0 + 2 * DAY).replace(tzinfo=None)
    aware = (T0 + 2 * DAY).astimezone(cet)
    assert space.count(since=naive) == space.count(since=aware) == 3
    assert [m.id for m in space.find(until=naive)] == [m.id for m in space.find(until=aware)]


@pytest.mark.parametrize("bad", ["2021-03-01", 1614600000, T0.date()])
def test_bad_time_bounds_raise(space: Space, bad: object) -> None:
    for call in (lambda: space.find(since=bad), lambda: space.count(until=bad),  # type: ignore
                 lambda: space.lexical_search("x", 1, None, since=bad)):  # type: ignore
        with pytest.raises(InvalidQueryError, match="datetime"):
            call()


def test_explicit_created_at_survives_reopen_and_export_import(tmp_path: Path) -> None:
    """A past ``created_at`` is kept through reopen and through an export/import round trip
    done the way ``msa_agent``'s bundle does it (ids and times carried into ``Space.add``)."""
    past = datetime(2019, 7, 4, 8, 30, 15, 123456, tzinfo=timezone.utc)
    src, dst = tmp_path / "src", tmp_path / "dst"
    with Space.create(src, FP, SPECS, durable=False) as s:
        m = mem(1, created_at=past.astimezone(timezone(timedelta(hours=-5))))
        (mid,) = s.add([m], [make_data(m, 1)])
        add_texts(s, ["newer memory about the launch"])
    with Space.open(src, FP) as s, Space.create(dst, FP, SPECS, durable=False) as d:
        assert s.get(mid).created_at == past  # type: ignore[union-attr]
        live = s.live_chunks()
        data = [{a.name: rows for a, rows in zip(SPECS, (s.read(a.name, [x])[0] for a in SPECS),
                                                 strict=True)} for x in live]
        d.add([_as_new(x) for x in live], data)
    with Space.open(dst, FP) as d:
        assert d.get(mid).created_at == past  # type: ignore[union-attr]
        assert [x.id for x in d.find(until=datetime(2020, 1, 1))] == [mid]
        assert [h[0] for h in d.lexical_search("memory 1", 1, None)] == [mid]
        assert d.lexical_search("launch", 1, None)
    assert_fts_consistent(dst)


def _as_new(m: object) -> NewMemory:
    fields = ("id", "namespace", "kind", "text", "metadata", "session_id", "user_id",
              "agent_id", "source_id", "part", "n_tokens", "n_chunks", "created_at")
    return NewMemory(**{f: getattr(m, f) for f in fields})
