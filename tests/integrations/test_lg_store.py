"""``MsaStore`` as LangGraph long-term memory: put/get/search/delete/namespaces, in a graph."""
# ruff: noqa: F811 - pytest fixtures imported from lc_fixtures are parameters here

from __future__ import annotations

import uuid
from typing import TypedDict

import pytest
from langgraph.graph import END, START, StateGraph
from langgraph.store.base import BaseStore, GetOp, PutOp, SearchOp
from lc_fixtures import memory  # noqa: F401

from msa_agent.integrations import MsaStore
from msa_agent.integrations.langgraph_store import matches_filter, value_text
from msa_agent.memory import Memory


@pytest.fixture()
def store(memory: Memory) -> MsaStore:
    return MsaStore(memory, prefix=f"t{uuid.uuid4().hex[:8]}")


def test_put_get_replace_delete(store: MsaStore, memory: Memory) -> None:
    ns = ("users", "a/b")  # a "/" inside a label survives
    assert store.get(ns, "food") is None
    store.put(ns, "food", {"text": "Alice is vegetarian", "since": 2020})
    first = store.get(ns, "food")
    assert first.value == {"text": "Alice is vegetarian", "since": 2020} and first.namespace == ns
    store.put(ns, "food", {"text": "Alice is vegan now"})
    second = store.get(ns, "food")
    assert second.value == {"text": "Alice is vegan now"}  # newest wins, old one forgotten
    assert second.created_at == first.created_at and second.updated_at >= first.updated_at
    assert len(memory.list(namespace=store.encode(ns), limit=None)) == 1
    store.delete(ns, "food")
    assert store.get(ns, "food") is None and store.list_namespaces() == []


def test_search_by_query_filter_and_pages(store: MsaStore) -> None:
    store.put(("docs", "a"), "1", {"text": "Paris is the capital of France", "n": 1})
    store.put(("docs", "a"), "2", {"text": "Bob likes tea", "n": 2})
    store.put(("docs", "b"), "3", {"content": "The fox jumps", "n": 3, "tag": "x"})
    store.put(("other",), "4", {"text": "not under docs"})
    assert [i.key for i in store.search(("docs",))] == ["3", "2", "1"]  # newest first
    assert [i.key for i in store.search(("docs",), limit=1, offset=1)] == ["2"]
    assert [i.key for i in store.search(("docs",), filter={"n": {"$gte": 2}, "tag": "x"})] == \
        ["3"]
    hits = store.search(("docs",), query="capital of France")
    assert {i.key for i in hits} == {"1", "2", "3"} and all(i.score is not None for i in hits)
    assert [i.score for i in hits] == sorted((i.score for i in hits), reverse=True)
    assert [i.key for i in store.search(("docs",), query="tea", filter={"n": 2})] == ["2"]


def test_index_false_is_kept_but_not_searched(store: MsaStore) -> None:
    store.put(("n",), "hidden", {"text": "secret"}, index=False)
    store.put(("n",), "shown", {"title": "T", "body": "visible"}, index=["body"])
    assert store.get(("n",), "hidden").value == {"text": "secret"}
    assert [i.key for i in store.search(("n",), query="secret")] == ["shown"]


def test_list_namespaces(store: MsaStore) -> None:
    for ns in [("a", "x", "1"), ("a", "y", "1"), ("b", "x", "2")]:
        store.put(ns, "k", {"v": 1})
    assert store.list_namespaces() == [("a", "x", "1"), ("a", "y", "1"), ("b", "x", "2")]
    assert store.list_namespaces(prefix=("a",)) == [("a", "x", "1"), ("a", "y", "1")]
    assert store.list_namespaces(suffix=("1",), max_depth=1) == [("a",)]
    assert store.list_namespaces(prefix=("*", "x")) == [("a", "x", "1"), ("b", "x", "2")]
    assert store.list_namespaces(limit=1, offset=2) == [("b", "x", "2")]


def test_batch_order_and_async(store: MsaStore) -> None:
    import asyncio

    ops = [PutOp(("s",), "k", {"v": 1}), PutOp(("s",), "k", {"v": 2}), GetOp(("s",), "k"),
           SearchOp(("s",)), PutOp(("s",), "k", None), GetOp(("s",), "k")]
    results = asyncio.run(store.abatch(ops))
    assert results[2].value == {"v": 2} and [i.value for i in results[3]] == [{"v": 2}]
    assert results[0] is None and results[5] is None


def test_in_a_langgraph_graph(store: MsaStore) -> None:
    class State(TypedDict):
        fact: str
        recalled: list[str]

    def write(state: State, *, store: BaseStore) -> dict:
        store.put(("facts",), "f1", {"text": state["fact"]})
        return {}

    def read(state: State, *, store: BaseStore) -> dict:
        return {"recalled": [i.value["text"] for i in store.search(("facts",), query="cat")]}

    graph = StateGraph(State)
    graph.add_node("write", write)
    graph.add_node("read", read)
    graph.add_edge(START, "write")
    graph.add_edge("write", "read")
    graph.add_edge("read", END)
    out = graph.compile(store=store).invoke({"fact": "the cat is Ada", "recalled": []})
    assert out["recalled"] == ["the cat is Ada"]


def test_value_text_and_filters() -> None:
    assert value_text({"content": "c", "x": 1}) == "c"
    assert value_text({"a": {"b": "deep"}, "c": 2}, ["a.b", "c"]) == "deep\n2"
    assert value_text({"x": 1}) == '{"x": 1}'
    assert matches_filter({"n": 2, "a": {"b": 1}}, {"n": {"$gt": 1, "$lt": 3}, "a.b": 1})
    assert not matches_filter({"n": "x"}, {"n": {"$gt": 1}})
    assert not matches_filter({"n": 2}, {"n": {"$ne": 2}})
