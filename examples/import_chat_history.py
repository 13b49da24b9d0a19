"""Import a chat history with its real dates; recall prefers the newest version of a fact.

A JSON export of an old conversation (a list of ``{"date", "role", "content"}`` messages,
written by this script into a temporary file) is imported with one ``remember_many`` call,
each message at its own date (``at=``). Then:

* "Where do I live?": the user first lived in Porto (2023) and moved to Lisbon (2025); both
  messages match, and recall puts the newer one first (recency among versions of a fact);
* ``since=`` / ``until=``: recall only what was said in a period.

Run::

    python examples/import_chat_history.py            # in a temporary folder, removed
    python examples/import_chat_history.py ./memory   # in ./memory, kept
"""

from __future__ import annotations

import argparse
import json
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from msa_agent import Memory, RecallHit

HISTORY = [
    {"date": "2023-03-02T09:15:00+00:00", "role": "user",
     "content": "I live in Porto, near the river."},
    {"date": "2023-03-02T09:16:00+00:00", "role": "assistant",
     "content": "Porto is lovely. Noted."},
    {"date": "2023-06-10T18:00:00+00:00", "role": "user",
     "content": "My favourite food is bacalhau."},
    {"date": "2024-01-20T08:30:00+00:00", "role": "user",
     "content": "I work as a nurse at the city hospital."},
    {"date": "2025-05-14T20:05:00+00:00", "role": "user",
     "content": "Big news: I moved to Lisbon last week, I live in Alfama now."},
    {"date": "2025-05-14T20:06:00+00:00", "role": "assistant",
     "content": "Congratulations on the move to Lisbon!"},
]
JAN_2024 = datetime(2024, 1, 1, tzinfo=timezone.utc)
JAN_2025 = datetime(2025, 1, 1, tzinfo=timezone.utc)


def import_history(mem: Memory, export: Path) -> list[str]:
    """Every message of the export as one session memory, dated when it was said."""
    messages: list[dict[str, Any]] = json.loads(export.read_text())
    return mem.remember_many([
        {"text": f"{m['role']}: {m['content']}", "kind": "session", "session_id": "chat-2023",
         "metadata": {"role": m["role"]}, "at": datetime.fromisoformat(m["date"])}
        for m in messages])


def show(title: str, hits: list[RecallHit]) -> None:
    print(f"\n{title}")
    for rank, hit in enumerate(hits, 1):
        print(f"  {rank}. {hit.created_at:%Y-%m-%d} score={hit.score:.3f} {hit.text}")


def run(path: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp, Memory.open(path) as mem:
        export = Path(tmp) / "chat_export.json"
        export.write_text(json.dumps(HISTORY, indent=1))
        print(f"imported {len(import_history(mem, export))} messages from {export.name}, "
              f"{HISTORY[0]['date'][:10]} to {HISTORY[-1]['date'][:10]}")

        question = "Where do I live?"
        # Both versions of the fact match; the newer one is placed first. (The score is the
        # fused channel score: the older message may score higher and still rank below it.)
        show(f"recall: {question}", mem.recall(question, k=2))
        show(f"recall: {question} (until 2024)", mem.recall(question, k=2, until=JAN_2024))
        show(f"recall: {question} (since 2025)", mem.recall(question, k=2, since=JAN_2025))
        newest = mem.list(newest_first=True, limit=1)[0]
        print(f"\nnewest memory: {newest.created_at:%Y-%m-%d %H:%M} {newest.text}")


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
