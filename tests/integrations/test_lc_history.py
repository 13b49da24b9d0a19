"""``MsaChatMessageHistory``: ordered, scoped by session, exact round trip, clear."""
# ruff: noqa: F811 - pytest fixtures imported from lc_fixtures are parameters here

from __future__ import annotations

import uuid

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from lc_fixtures import memory  # noqa: F401

from msa_agent.integrations import MsaChatMessageHistory, MsaRetriever
from msa_agent.memory import Memory


def _session() -> str:
    return uuid.uuid4().hex


def test_messages_round_trip_in_order(memory: Memory) -> None:
    history = MsaChatMessageHistory(memory, _session(), user_id="u1")
    msgs = [SystemMessage("be brief"), HumanMessage("my cat is called Ada"),
            AIMessage("", tool_calls=[{"name": "note", "args": {"x": 1}, "id": "c1"}]),
            ToolMessage("saved", tool_call_id="c1")]
    history.add_messages(msgs[:2])
    for m in msgs[2:]:
        history.add_message(m)
    assert history.messages == msgs
    rows = memory.list(where={"session_id": history.session_id}, limit=None)
    assert {r.kind for r in rows} == {"session"} and {r.user_id for r in rows} == {"u1"}
    assert rows[1].text == "human: my cat is called Ada"


def test_sessions_are_isolated_and_clear_only_its_own(memory: Memory) -> None:
    a, b = MsaChatMessageHistory(memory, _session()), MsaChatMessageHistory(memory, _session())
    a.add_messages([HumanMessage("alpha")])
    b.add_messages([HumanMessage("beta"), AIMessage("gamma")])
    assert [m.content for m in a.messages] == ["alpha"]
    a.clear()
    assert a.messages == [] and len(b.messages) == 2
    a.add_messages([HumanMessage("again")])
    assert [m.content for m in a.messages] == ["again"]


def test_namespace_scope_and_recall(memory: Memory) -> None:
    sid = _session()
    history = MsaChatMessageHistory(memory, sid, namespace="chats")
    history.add_messages([HumanMessage("I am allergic to peanuts")])
    assert MsaChatMessageHistory(memory, sid).messages == []  # other namespace
    docs = MsaRetriever(memory=memory, namespace="chats", where={"session_id": sid}, k=3) \
        .invoke("allergy")
    assert [d.page_content for d in docs] == ["human: I am allergic to peanuts"]
    assert docs[0].metadata["kind"] == "session" and docs[0].metadata["role"] == "human"


async def test_async_twins(memory: Memory) -> None:
    history = MsaChatMessageHistory(memory, _session())
    await history.aadd_messages([HumanMessage("hi"), AIMessage("hello")])
    assert [m.content for m in await history.aget_messages()] == ["hi", "hello"]
    await history.aclear()
    assert await history.aget_messages() == []


async def test_async_paths_run_through_async_memory(memory: Memory, monkeypatch) -> None:  # noqa: ANN001
    """The async twins call AsyncMemory (not a thread of their own) and give the sync result."""
    from msa_agent.async_memory import AsyncMemory

    called: list[str] = []
    for name in ("recall", "list", "remember_many", "forget"):
        original = getattr(AsyncMemory, name)

        async def spy(self, *a, _name=name, _orig=original, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
            called.append(_name)
            return await _orig(self, *a, **kw)

        monkeypatch.setattr(AsyncMemory, name, spy)
    retriever = MsaRetriever(memory=memory, k=3)
    assert [d.id for d in await retriever.ainvoke("green tea")] == [
        d.id for d in retriever.invoke("green tea")]
    history = MsaChatMessageHistory(memory, _session())
    await history.aadd_messages([HumanMessage("one")])
    await history.aadd_messages([AIMessage("two")])
    assert [m.content for m in await history.aget_messages()] == ["one", "two"]
    assert [m.content for m in history.messages] == ["one", "two"]
    await history.aclear()
    assert called == ["recall", "list", "remember_many", "list", "remember_many", "list",
                      "forget"]
