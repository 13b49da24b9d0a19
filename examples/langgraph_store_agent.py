"""A LangGraph agent whose long-term memory is ``MsaStore``, remembering across sessions.

The graph is ``recall -> respond -> remember``: ``recall`` searches the store (LangGraph's
``BaseStore``, here MSA routing + BM25 over the embedded model) for the user's facts,
``respond`` answers a question from them (rule-based: no external LLM, offline), and
``remember`` writes every statement to the store under ``("users", USER, "facts")``.
The first session tells the agent a few facts; the memory is closed, reopened from disk,
and a second session asks about them. Run against a folder that already holds facts, it
goes straight to the questions. Needs ``pip install 'msa-agent[langchain]'``.

Run::

    python examples/langgraph_store_agent.py            # in a temporary folder, removed
    python examples/langgraph_store_agent.py ./memory   # in ./memory, kept across runs
"""

from __future__ import annotations

import argparse
import tempfile
import uuid
from pathlib import Path
from typing import TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.store.base import BaseStore

from msa_agent import Memory
from msa_agent.integrations import MsaStore

USER = "dana"
FIRST_SESSION = [
    "Hi! My name is Dana and I work as a marine biologist.",
    "I live in Lisbon with my grey cat Ada.",
    "I am allergic to peanuts, so never suggest satay.",
]
LATER_SESSION = [
    "Where do I live, and what is my cat called?",
    "What food should I avoid?",
]


class Turn(TypedDict):
    """State of one turn through the graph."""

    user: str
    message: str
    recalled: list[str]
    reply: str


def facts_ns(user: str) -> tuple[str, ...]:
    return ("users", user, "facts")


def is_question(message: str) -> bool:
    return message.rstrip().endswith("?")


def recall(state: Turn, *, store: BaseStore) -> dict:
    """Search the store: the user's facts that rank highest for the message."""
    items = store.search(facts_ns(state["user"]), query=state["message"], limit=2)
    return {"recalled": [item.value["text"] for item in items]}


def respond(state: Turn) -> dict:
    """Answer a question from the recalled facts; acknowledge a statement."""
    if not is_question(state["message"]):
        return {"reply": "Got it, I will remember that."}
    if not state["recalled"]:
        return {"reply": "I don't know yet: tell me about yourself first."}
    lines = "\n".join(f"  - {text}" for text in state["recalled"])
    return {"reply": f"From what you told me before:\n{lines}"}


def remember(state: Turn, *, store: BaseStore) -> dict:
    """Write statements (not questions) to the store as long-term facts."""
    if not is_question(state["message"]):
        store.put(facts_ns(state["user"]), uuid.uuid4().hex, {"text": state["message"]})
    return {}


def build_agent(store: BaseStore) -> CompiledStateGraph:
    graph = StateGraph(Turn)
    graph.add_node("recall", recall)
    graph.add_node("respond", respond)
    graph.add_node("remember", remember)
    graph.add_edge(START, "recall")
    graph.add_edge("recall", "respond")
    graph.add_edge("respond", "remember")
    graph.add_edge("remember", END)
    return graph.compile(store=store)


def session(mem: Memory, messages: list[str]) -> None:
    """Run each message through the graph, with the store on this open memory."""
    store = MsaStore(mem)
    print(f"[session: {len(store.search(facts_ns(USER), limit=100))} facts about {USER} "
          "in the store]")
    agent = build_agent(store)
    for message in messages:
        out = agent.invoke({"user": USER, "message": message, "recalled": [], "reply": ""})
        print(f"user : {message}\nagent: {out['reply']}\n")


def run(path: Path) -> None:
    with Memory.open(path) as mem:  # no model given: the embedded SmolLM2-135M-Instruct
        if not MsaStore(mem).search(facts_ns(USER), limit=1):
            session(mem, FIRST_SESSION)
    with Memory.open(path) as mem:  # reopened: the facts come back from disk
        session(mem, LATER_SESSION)


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
