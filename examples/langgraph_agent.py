"""A small LangGraph agent with lifelong memory on msa-agent: offline, on the embedded model.

Run it twice against the same folder::

    python examples/langgraph_agent.py --path /tmp/agent-mem   # 1st run: learns about you
    python examples/langgraph_agent.py --path /tmp/agent-mem   # 2nd run: recalls it

The graph is ``recall -> respond -> remember``. Long-term facts live in an ``MsaStore``
(LangGraph's ``BaseStore``) under ``("users", USER, "facts")``; each run's conversation is
kept by ``MsaChatMessageHistory``. Replies are rule-based (grounded generation is a later
issue): a question is answered with the memories MSA routing recalls for it, and a
statement is remembered. Needs ``pip install 'msa-agent[langchain]'``.
"""

from __future__ import annotations

import argparse
import uuid
from typing import TypedDict

from langchain_core.messages import AIMessage, HumanMessage
from langgraph.graph import END, START, StateGraph
from langgraph.store.base import BaseStore

from msa_agent import Memory
from msa_agent.integrations import MsaChatMessageHistory, MsaStore

FIRST_RUN = [
    "Hi! My name is Dana and I work as a marine biologist.",
    "I live in Lisbon with my grey cat Ada.",
    "I am allergic to peanuts, so never suggest satay.",
]
LATER_RUN = [
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


def recall(state: Turn, *, store: BaseStore) -> dict:
    """Fetch the user's facts that MSA routing scores highest for the message."""
    items = store.search(facts_ns(state["user"]), query=state["message"], limit=3)
    return {"recalled": [i.value["text"] for i in items]}


def respond(state: Turn) -> dict:
    """Answer a question from memory; acknowledge a statement."""
    if not state["message"].rstrip().endswith("?"):
        return {"reply": "Got it, I will remember that."}
    if not state["recalled"]:
        return {"reply": "I don't know yet: tell me about yourself first."}
    lines = "\n".join(f"  - {t}" for t in state["recalled"])
    return {"reply": f"From what you told me before:\n{lines}"}


def remember(state: Turn, *, store: BaseStore) -> dict:
    """Keep statements (not questions) as long-term facts."""
    if not state["message"].rstrip().endswith("?"):
        store.put(facts_ns(state["user"]), uuid.uuid4().hex, {"text": state["message"]})
    return {}


def build_agent(store: BaseStore):  # noqa: ANN201 - a compiled LangGraph graph
    graph = StateGraph(Turn)
    graph.add_node("recall", recall)
    graph.add_node("respond", respond)
    graph.add_node("remember", remember)
    graph.add_edge(START, "recall")
    graph.add_edge("recall", "respond")
    graph.add_edge("respond", "remember")
    graph.add_edge("remember", END)
    return graph.compile(store=store)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default="./agent-mem", help="memory folder (kept across runs)")
    parser.add_argument("--user", default="dana")
    parser.add_argument("--say", nargs="*", help="messages to send (default: a scripted demo)")
    args = parser.parse_args()

    with Memory.open(args.path) as mem:  # no model: the embedded SmolLM2-135M-Instruct
        store = MsaStore(mem)
        agent = build_agent(store)
        known = store.search(facts_ns(args.user), limit=100)
        script = args.say or (LATER_RUN if known else FIRST_RUN)
        print(f"[{len(known)} facts about {args.user} already in {args.path}]")
        history = MsaChatMessageHistory(mem, f"run-{uuid.uuid4().hex[:8]}", user_id=args.user)
        for message in script:
            out = agent.invoke({"user": args.user, "message": message, "recalled": [],
                                "reply": ""})
            history.add_messages([HumanMessage(message), AIMessage(out["reply"])])
            print(f"user : {message}\nagent: {out['reply']}\n")
        print(f"[{len(history.messages)} messages of this run kept in session "
              f"{history.session_id}; {mem.stats().memories} memories in total]")


if __name__ == "__main__":
    main()
