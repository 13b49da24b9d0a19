"""A plain agent loop on msa-agent: remember turns, recall with explanations, answer, forget.

Shows the core ``Memory`` API on the embedded default model (SmolLM2-135M-Instruct), offline:

* ``remember`` each turn of two conversations (``kind="session"``, ``session_id``);
* ``recall(..., explain=True)``: the score of each hit, each channel's score and the chunk
  of the memory that matched;
* ``answer(...)`` a question from memory, then the same with ``stream=True``;
* ``forget(where={"session_id": ...})``: one whole conversation, really deleted.

Run::

    python examples/agent_loop.py            # in a temporary folder, removed at the end
    python examples/agent_loop.py ./memory   # in ./memory, kept
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from msa_agent import Memory

CONVERSATIONS = {
    "s-family": [
        "User: my daughter Maya starts violin lessons on Tuesdays at 5pm.",
        "Assistant: Noted, violin for Maya on Tuesdays at 5pm.",
        "User: and her school play is on the 12th of June.",
    ],
    "s-work": [
        "User: the staging deploy host is vrai-thorn-7.",
        "Assistant: Got it, staging deploys go to vrai-thorn-7.",
    ],
}
QUESTION = "When are Maya's violin lessons?"


def remember_turns(mem: Memory) -> None:
    """One memory per turn, scoped by its conversation's session id."""
    for session_id, turns in CONVERSATIONS.items():
        for turn in turns:
            mem.remember(turn, kind="session", session_id=session_id)
    print(f"remembered {mem.stats().memories} turns of {len(CONVERSATIONS)} conversations")


def show_recall(mem: Memory, query: str) -> None:
    """Best first: fused score, session, text, and why (each channel, layers, matched chunk)."""
    print(f"\nrecall: {query}")
    for rank, hit in enumerate(mem.recall(query, k=3, explain=True), 1):
        why = hit.explanation
        assert why is not None  # explain=True
        channels = ", ".join(f"{c} {why.channels[c]:.2f} (rank {why.channels[c + '_rank']:.0f})"
                             for c in ("msa", "lexical") if c in why.channels)
        best_layer = max(why.layer_scores, key=why.layer_scores.__getitem__)
        print(f"  {rank}. score={hit.score:.3f} [{mem.get(hit.id).session_id}] {hit.text}")
        print(f"     channels: {channels}; best of {len(why.layer_scores)} MSA layers: "
              f"layer {best_layer} ({why.layer_scores[best_layer]:.2f})")
        print(f"     matched chunk: {why.best_chunk_text!r}")


def run(path: Path) -> None:
    with Memory.open(path) as mem:  # no model given: the embedded SmolLM2-135M-Instruct
        remember_turns(mem)
        show_recall(mem, QUESTION)

        answer = mem.answer(QUESTION, k=2, max_new_tokens=16)
        print(f"\nanswer: {answer.text.strip()}")
        print(f"  read {len(answer.rounds[0].memories)} memories ({answer.read}), "
              f"{answer.generated_tokens} tokens generated")

        question = "Which host do staging deploys go to?"
        print(f"\nstreamed answer to {question!r}: ", end="", flush=True)
        stream = mem.answer(question, k=1, where={"session_id": "s-work"}, max_new_tokens=16,
                            stream=True)
        for piece in stream:
            print(piece, end="", flush=True)
        print()

        deleted = mem.forget(where={"session_id": "s-work"})
        left = {r.session_id for r in mem.list(limit=None)}
        print(f"\nforgot {deleted} memories of session s-work; sessions left: {sorted(left)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", type=Path,
                        help="memory folder (default: a temporary one, removed at the end)")
    args = parser.parse_args()
    if args.path is not None:
        run(args.path)
        return
    with tempfile.TemporaryDirectory() as tmp:
        run(Path(tmp) / "memory")


if __name__ == "__main__":
    main()
