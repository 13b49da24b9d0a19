"""The basics through ``AsyncMemory``, for asyncio agents: remember, recall, answer, forget.

Every ``Memory`` method is a coroutine of ``AsyncMemory`` (each call runs in a worker thread,
so the event loop keeps serving other tasks while the model works). Shows ``remember_many``,
three recalls at once with ``asyncio.gather``, a streamed answer (``async for``) and
``forget``, on the embedded default model, offline.

Run::

    python examples/async_agent.py            # in a temporary folder, removed at the end
    python examples/async_agent.py ./memory   # in ./memory, kept
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from msa_agent import AsyncMemory

FACTS = [
    "The staging deploy host is vrai-thorn-7.",
    "Dana's grey cat is called Ada.",
    "The weekly sync is on Mondays at 10:00 in room Tagus.",
]
QUESTIONS = [
    "Which host do staging deploys go to?",
    "What is the cat called?",
    "When is the weekly sync?",
]


async def run(path: Path) -> None:
    async with await AsyncMemory.open(path) as mem:  # the embedded SmolLM2-135M-Instruct
        ids = await mem.remember_many([{"text": t, "kind": "tool"} for t in FACTS])
        print(f"remembered {len(ids)} facts")

        # Three recalls at once; the memory's locks let them take turns on the model.
        results = await asyncio.gather(*(mem.recall(q, k=1) for q in QUESTIONS))
        for question, hits in zip(QUESTIONS, results):
            print(f"recall: {question} -> {hits[0].text} (score {hits[0].score:.3f})")

        question = "Which room is the weekly sync in?"
        print(f"streamed answer to {question!r}: ", end="", flush=True)
        stream = await mem.answer(question, k=1, max_new_tokens=16, stream=True)
        async for piece in stream:
            print(piece, end="", flush=True)
        print()

        deleted = await mem.forget(ids[0])
        print(f"forgot {deleted} memory; {(await mem.stats()).memories} left")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", type=Path,
                        help="memory folder (default: a temporary one, removed at the end)")
    args = parser.parse_args()
    if args.path is not None:
        asyncio.run(run(args.path))
        return
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(Path(tmp) / "memory"))


if __name__ == "__main__":
    main()
