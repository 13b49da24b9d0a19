"""The plug-ins never cross namespaces either (issue 16): random put/delete/get/search
sequences on ``MsaStore`` against a plain model of which item lives where, and
``MsaRetriever`` bound to one namespace."""
# ruff: noqa: F811 - pytest fixtures imported from lc_fixtures are parameters here

from __future__ import annotations

import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lc_fixtures import memory  # noqa: F401

from msa_agent.integrations import MsaRetriever, MsaStore
from msa_agent.memory import Memory

SPACES = [("users", "alice"), ("users", "bob"), ("teams", "alice")]
KEYS = ["k1", "k2", "k3"]
TEXTS = ["likes green tea", "works in Lisbon", "plays the violin", "owns a red bicycle"]

space = st.sampled_from(SPACES)
OPS = st.one_of(
    st.tuples(st.just("put"), space, st.sampled_from(KEYS), st.sampled_from(TEXTS)),
    st.tuples(st.just("delete"), space, st.sampled_from(KEYS)),
    st.tuples(st.just("get"), space, st.sampled_from(KEYS)),
    st.tuples(st.just("search"), st.sampled_from([("users",), ("teams",), *SPACES]),
              st.sampled_from(TEXTS)),
)


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(OPS, min_size=1, max_size=10))
def test_store_items_stay_in_their_namespace(memory: Memory, ops: list[tuple]) -> None:
    store = MsaStore(memory, prefix=f"iso{uuid.uuid4().hex[:8]}")
    held: dict[tuple[tuple[str, ...], str], str] = {}  # (namespace, key) -> text
    for op in ops:
        name, where, *rest = op
        if name == "put":
            store.put(where, rest[0], {"text": rest[1]})
            held[where, rest[0]] = rest[1]
        elif name == "delete":
            store.delete(where, rest[0])
            held.pop((where, rest[0]), None)
        elif name == "get":
            item = store.get(where, rest[0])
            want = held.get((where, rest[0]))
            assert (item.value["text"] if item else None) == want
            assert item is None or tuple(item.namespace) == where
        else:
            found = store.search(where, query=rest[0], limit=10)
            assert all(tuple(i.namespace)[: len(where)] == where for i in found)
            assert {(tuple(i.namespace), i.key) for i in found} == {
                k for k in held if k[0][: len(where)] == where}
    for ns in SPACES:  # the end state, namespace by namespace
        found = store.search(ns, limit=50)
        assert {(tuple(i.namespace), i.key) for i in found} == {k for k in held if k[0] == ns}


def test_retriever_reads_only_its_namespace(memory: Memory) -> None:
    ns = f"private-{uuid.uuid4().hex[:8]}"
    memory.remember("Carol keeps the spare keys under the blue pot.", namespace=ns)
    mine = MsaRetriever(memory=memory, namespace=ns, k=5).invoke("spare keys")
    other = MsaRetriever(memory=memory, k=5).invoke("spare keys under the blue pot")
    assert [d.metadata["namespace"] for d in mine] == [ns]
    assert all(d.metadata["namespace"] != ns for d in other)
