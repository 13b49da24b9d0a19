"""``MsaRetriever`` in a LangChain LCEL chain: retriever | format docs | prompt | "LLM".

Offline, no external LLM. The chain's model step is a ``RunnableLambda`` that returns the
prompt it receives, so you see the recalled context as a chat model would; replace it with
any chat model (``ChatOpenAI()``, ...) for a real answer. A second runnable puts
``Memory.answer`` (the embedded SmolLM2-135M-Instruct reading its top memory) where the LLM
would be. Needs ``pip install 'msa-agent[langchain]'``.

Run::

    python examples/langchain_retriever.py            # in a temporary folder, removed
    python examples/langchain_retriever.py ./memory   # in ./memory, kept
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompt_values import PromptValue
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableLambda, RunnablePassthrough

from msa_agent import Memory
from msa_agent.integrations import MsaRetriever

NOTES = [
    "Ada is Dana's grey cat; she is twelve and eats only fish-based food.",
    "The team's weekly sync is on Mondays at 10:00 in room Tagus.",
    "Dana is allergic to peanuts: never suggest satay or peanut sauce.",
    "The office wifi password was rotated in May; ask Joana for the new one.",
]
QUESTION = "What does Dana's cat eat?"

PROMPT = ChatPromptTemplate.from_messages([
    ("system", "Answer from the context only.\n\nContext:\n{context}"),
    ("human", "{question}"),
])


def format_docs(docs: list[Document]) -> str:
    """One line per recalled memory, best first, with its score."""
    return "\n".join(f"- ({d.metadata['score']:.2f}) {d.page_content}" for d in docs)


def show_prompt(prompt: PromptValue) -> str:
    """Stands in for a chat model: returns the prompt it would receive, as text."""
    return prompt.to_string()


def build_chain(retriever: MsaRetriever) -> Runnable:
    """question -> {context, question} -> prompt -> stand-in model -> text."""
    return ({"context": retriever | format_docs, "question": RunnablePassthrough()}
            | PROMPT | RunnableLambda(show_prompt) | StrOutputParser())


def run(path: Path) -> None:
    with Memory.open(path) as mem:  # no model given: the embedded SmolLM2-135M-Instruct
        mem.remember_many([{"text": t, "kind": "document"} for t in NOTES])
        retriever = MsaRetriever(memory=mem, k=2, where={"kind": "document"})
        for doc in retriever.invoke(QUESTION):
            print(f"document {doc.id}: score={doc.metadata['score']:.3f} {doc.page_content}")

        print("\nprompt the chain would send to a chat model:")
        print(build_chain(retriever).invoke(QUESTION))

        llm = RunnableLambda(lambda q: mem.answer(q, k=1, max_new_tokens=16).text.strip())
        print(f"\nanswer (Memory.answer as the LLM): {llm.invoke(QUESTION)}")


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
