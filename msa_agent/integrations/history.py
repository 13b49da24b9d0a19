"""``MsaChatMessageHistory``: a LangChain chat history kept as session memories."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage, message_to_dict, messages_from_dict

from msa_agent.async_memory import AsyncMemory
from msa_agent.memory import Memory
from msa_agent.types import MemoryRecord

ORIGIN = "langchain-history"


class MsaChatMessageHistory(BaseChatMessageHistory):
    """The messages of one session, each stored as a ``kind="session"`` memory.

    Messages are recallable like any memory (``"human: ..."``/``"ai: ..."`` text) and are
    scoped by ``session_id`` (plus ``namespace``, ``user_id``, ``agent_id`` when given).
    The full message (type, content, tool calls, ...) is kept in the metadata, so
    ``messages`` returns them exactly, in order.
    """

    def __init__(self, memory: Memory, session_id: str, *, namespace: str | None = None,
                 user_id: str | None = None, agent_id: str | None = None) -> None:
        self.memory, self.session_id, self.namespace = memory, session_id, namespace
        self.user_id, self.agent_id = user_id, agent_id

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """The session's messages, oldest first."""
        return messages_from_dict([r.metadata["lc_message"] for r in self._records()])

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Remember ``messages`` in one batched write."""
        self.memory.remember_many(self._items(self._records(), messages))

    def clear(self) -> None:
        """Forget every message of the session."""
        self.memory.forget(where=self._where(), namespace=self.namespace)

    # The async paths run the same calls through AsyncMemory (the event loop is not blocked).
    async def aget_messages(self) -> list[BaseMessage]:
        rows = await AsyncMemory(self.memory).list(**self._list_args())
        return messages_from_dict([r.metadata["lc_message"] for r in _ordered(rows)])

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        mem = AsyncMemory(self.memory)
        records = _ordered(await mem.list(**self._list_args()))
        await mem.remember_many(self._items(records, messages))

    async def aclear(self) -> None:
        await AsyncMemory(self.memory).forget(where=self._where(), namespace=self.namespace)

    def _where(self) -> dict[str, Any]:
        return {"session_id": self.session_id, "origin": ORIGIN}

    def _list_args(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "where": self._where(), "limit": None}

    def _records(self) -> list[MemoryRecord]:
        return _ordered(self.memory.list(**self._list_args()))

    def _items(self, records: list[MemoryRecord], messages: Sequence[BaseMessage]
               ) -> list[dict[str, Any]]:
        """``messages`` as memory items numbered after the session's ``records``."""
        start = records[-1].metadata["lc_seq"] + 1 if records else 0
        return [self._item(m, start + i) for i, m in enumerate(messages)]

    def _item(self, message: BaseMessage, seq: int) -> dict[str, Any]:
        return {"text": f"{message.type}: {_text(message)}", "kind": "session",
                "session_id": self.session_id, "user_id": self.user_id,
                "agent_id": self.agent_id, "namespace": self.namespace,
                "metadata": {"origin": ORIGIN, "lc_seq": seq, "role": message.type,
                             "lc_message": message_to_dict(message)}}


def _ordered(rows: list[MemoryRecord]) -> list[MemoryRecord]:
    """The first parts of a session's messages, in message order."""
    return sorted((r for r in rows if r.part == 0), key=lambda r: r.metadata["lc_seq"])


def _text(message: BaseMessage) -> str:
    """Readable text of a message; ``"(empty)"`` for e.g. a bare tool call."""
    return str(message.text).strip() or "(empty)"
