"""``AsyncMemory``: the :class:`~msa_agent.memory.Memory` API for asyncio agent frameworks.

The engine is synchronous: it runs a torch forward and SQLite writes on the calling thread.
Each coroutine here runs the matching ``Memory`` method in a worker thread
(:func:`asyncio.to_thread`), so the event loop keeps serving other tasks while a memory is
encoded or an answer generated. ``Memory``'s own locks make concurrent calls safe: writes
and reads of the space take turns, and every model forward holds the model lock. The
methods, their arguments, results and errors are ``Memory``'s (one definition; nothing is
re-implemented here).

>>> async with await AsyncMemory.open("./mem") as mem:  # doctest: +SKIP
...     await mem.remember("The cat is called Ada.")
...     hits = await mem.recall("What is the cat's name?")
...     async for piece in await mem.answer("What is the cat's name?", stream=True):
...         print(piece, end="")
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

from msa_agent.config import MemoryConfig
from msa_agent.memory import Memory
from msa_agent.runtime.stream import AnswerStream
from msa_agent.types import Answer

_END = object()


def _in_thread(name: str) -> Callable[..., Coroutine[Any, Any, Any]]:
    """A coroutine method running ``Memory.<name>`` in a worker thread."""
    sync = getattr(Memory, name)

    @functools.wraps(sync)
    async def method(self: AsyncMemory, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(getattr(self.memory, name), *args, **kwargs)

    return method


class AsyncAnswerStream:
    """``async for piece in stream``: an :class:`AnswerStream` pulled from a worker thread;
    ``.answer`` is set once it is exhausted."""

    def __init__(self, stream: AnswerStream) -> None:
        self._stream = stream
        self._pieces = iter(stream)

    @property
    def answer(self) -> Answer | None:
        return self._stream.answer

    def __aiter__(self) -> AsyncIterator[str]:
        return self

    async def __anext__(self) -> str:
        piece = await asyncio.to_thread(next, self._pieces, _END)
        if piece is _END:
            raise StopAsyncIteration
        return piece

    async def collect(self) -> Answer:
        async for _ in self:
            pass
        assert self._stream.answer is not None
        return self._stream.answer


class AsyncMemory:
    """Lifelong memory for asyncio code: every :class:`Memory` method as a coroutine.

    ``memory`` is the wrapped synchronous :class:`Memory` (same space, same locks): code that
    mixes threads and asyncio may use both.
    """

    remember = _in_thread("remember")
    remember_many = _in_thread("remember_many")
    forget = _in_thread("forget")
    update = _in_thread("update")
    history = _in_thread("history")
    compact = _in_thread("compact")
    recall = _in_thread("recall")
    recall_many = _in_thread("recall_many")
    get = _in_thread("get")
    list = _in_thread("list")
    namespaces = _in_thread("namespaces")
    stats = _in_thread("stats")
    export = _in_thread("export")
    import_ = _in_thread("import_")
    reencode_routing = _in_thread("reencode_routing")

    def __init__(self, memory: Memory) -> None:
        self.memory = memory

    @classmethod
    async def open(cls, path: str | Path, model: Any = None, namespace: str = "default", *,
                   config: MemoryConfig | None = None, **overrides: Any) -> AsyncMemory:
        """:meth:`Memory.open` in a worker thread (loading a model takes seconds)."""
        memory = await asyncio.to_thread(Memory.open, path, model, namespace, config=config,
                                         **overrides)
        return cls(memory)

    async def answer(self, question: str, *args: Any, stream: bool = False,
                     **kwargs: Any) -> Answer | AsyncAnswerStream:
        """:meth:`Memory.answer`; with ``stream=True`` an :class:`AsyncAnswerStream`."""
        result = await asyncio.to_thread(self.memory.answer, question, *args, stream=stream,
                                         **kwargs)
        return AsyncAnswerStream(result) if stream else result

    async def close(self) -> None:
        await asyncio.to_thread(self.memory.close)

    async def __aenter__(self) -> AsyncMemory:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def config(self) -> MemoryConfig:
        return self.memory.config

    @property
    def path(self) -> Path:
        return self.memory.path

