"""Generative memory interleave: the paper's multi-hop protocol for MSA-trained models.

Each round, every MSA layer routes the active context (the question plus the text appended so
far) to its own top-k memories and the model reads their pooled K/V. The model either answers
or asks for documents by generating their ids between two markers, e.g. ``<doc>2, 5</doc>``.
The asked documents' original text is appended to the context and a new round starts. Rounds
stop when the model answers without asking, asks only for what it already has, or at the limit.

Ids are per-request handles: the memories selected so far are numbered 1, 2, ... in the
order they were first selected, and the prompt lists each handle with the memory's first
words, so the model can name them. The markers come from the checkpoint's ``msa_config``
(``doc_id_open`` / ``doc_id_close``), default ``<doc>`` / ``</doc>``: the public format does
not fix how ids are spelled, so this is configurable rather than guessed once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from msa_agent.store import StoredMemory

# (context text) -> each MSA layer's selected memories, best first
SelectPerLayer = Callable[[str], Mapping[int, Sequence[StoredMemory]]]
# (prompt body, per-layer selection) -> generated token ids
Generate = Callable[[str, Mapping[int, Sequence[StoredMemory]]], Iterator[int]]
SNIPPET_WORDS = 8


@dataclass(frozen=True)
class IdProtocol:
    """How the model asks for documents: ``open`` ids ``close``, ids separated by , or space."""

    open: str = "<doc>"
    close: str = "</doc>"

    @classmethod
    def from_msa_config(cls, raw: Mapping[str, object] | None) -> IdProtocol:
        raw = raw or {}
        return cls(str(raw.get("doc_id_open", cls.open)), str(raw.get("doc_id_close", cls.close)))

    def requests(self, text: str) -> list[int] | None:
        """Ids asked for in ``text`` (the first complete request), or None if it asks nothing."""
        m = re.search(re.escape(self.open) + r"([\d,\s]*)" + re.escape(self.close), text)
        return None if m is None else [int(x) for x in re.findall(r"\d+", m.group(1))]

    def strip(self, text: str) -> str:
        """``text`` without its requests (what the model answered around them)."""
        pattern = re.escape(self.open) + r"[\d,\s]*" + re.escape(self.close)
        return re.sub(pattern, "", text).strip()

    def complete(self, text: str) -> bool:
        """True once ``text`` holds a whole request (generation pauses there)."""
        return self.requests(text) is not None


@dataclass
class GenerativeRound:
    """One round: what each layer read, the handles asked for, and what was appended."""

    round: int
    selected: dict[int, list[str]]  # layer -> memory ids
    asked: list[int] = field(default_factory=list)
    appended: list[str] = field(default_factory=list)  # memory ids whose text was appended


@dataclass
class GenerativeState:
    """Handles, appended memories and rounds of one request (filled as tokens come)."""

    handles: list[StoredMemory] = field(default_factory=list)
    appended: list[StoredMemory] = field(default_factory=list)
    rounds: list[GenerativeRound] = field(default_factory=list)
    final_text: str = ""

    def number(self, selection: Mapping[int, Sequence[StoredMemory]]) -> None:
        """Give a handle to each newly selected memory (layer order, then rank)."""
        known = {m.id for m in self.handles}
        for sel in selection.values():
            for m in sel:
                if m.id not in known:
                    known.add(m.id)
                    self.handles.append(m)

    def index_line(self) -> str:
        """``[1] first words... [2] ...``: what the model sees of each handle."""
        return " ".join(f"[{n}] {_snippet(m.text)}" for n, m in enumerate(self.handles, 1))

    def prompt(self, question: str) -> str:
        """The question, the handle index, and the appended documents under their handles."""
        lines = [question]
        if self.handles:
            lines.append(f"Documents: {self.index_line()}")
        number = {m.id: n for n, m in enumerate(self.handles, 1)}
        lines += [f"Document [{number[m.id]}]: {m.text}" for m in self.appended]
        return "\n".join(lines)


def _snippet(text: str) -> str:
    words = text.split()
    return " ".join(words[:SNIPPET_WORDS]) + (" ..." if len(words) > SNIPPET_WORDS else "")


def generative_rounds(
    question: str,
    select: SelectPerLayer,
    generate: Generate,
    decode: Callable[[list[int]], str],
    protocol: IdProtocol,
    max_rounds: int,
    state: GenerativeState,
) -> Iterator[int]:
    """Run the rounds, yielding every generated token; ``state`` records what happened.

    The last round's text, with any request removed, ends up in ``state.final_text``.
    """
    for r in range(1, max_rounds + 1):
        context = "\n".join([question, *(m.text for m in state.appended)])
        selection = select(context)
        state.number(selection)
        rnd = GenerativeRound(r, {layer: [m.id for m in sel] for layer, sel in selection.items()})
        state.rounds.append(rnd)
        tokens: list[int] = []
        for t in generate(state.prompt(question), selection):
            tokens.append(t)
            yield t
            if protocol.complete(decode(tokens)):
                break
        text = decode(tokens)
        asked = protocol.requests(text) or []
        rnd.asked = asked
        state.final_text = protocol.strip(text)
        new = _resolve(asked, state) if r < max_rounds else []  # the last round must answer
        if not new:
            return
        rnd.appended = [m.id for m in new]
        state.appended += new


def _resolve(asked: Sequence[int], state: GenerativeState) -> list[StoredMemory]:
    """Memories for the asked handles: known, not yet appended, each once, in asked order."""
    have = {m.id for m in state.appended}
    out: list[StoredMemory] = []
    for n in asked:
        if 1 <= n <= len(state.handles):
            m = state.handles[n - 1]
            if m.id not in have:
                have.add(m.id)
                out.append(m)
    return out
