"""Generative interleave (the paper's protocol): request parsing and the round loop."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone

from msa_agent.runtime.generative import GenerativeState, IdProtocol, generative_rounds
from msa_agent.store import StoredMemory

DOCS = {"a": "Alice works for Acme.", "b": "Acme is based in Lisbon.", "c": "Bob likes tea."}


def stored(mid: str) -> StoredMemory:
    return StoredMemory(id=mid, namespace="default", kind="note", text=DOCS[mid], metadata={},
                        session_id=None, user_id=None, agent_id=None, source_id=None, part=0,
                        created_at=datetime.now(timezone.utc), token_start=0, n_tokens=5,
                        chunk_start=0, n_chunks=1, content_hash="")


def test_protocol_parses_requests_and_custom_markers() -> None:
    p = IdProtocol()
    assert p.requests("I need <doc>2, 5 7</doc> first") == [2, 5, 7]
    assert p.requests("no request here") is None
    assert p.requests("<doc>3") is None and not p.complete("<doc>3")
    assert p.strip("Lisbon <doc>1</doc>") == "Lisbon"  # noqa: B005 (our method, not str.strip)
    custom = IdProtocol.from_msa_config({"doc_id_open": "[[", "doc_id_close": "]]"})
    assert custom.requests("see [[4]]") == [4] and IdProtocol.from_msa_config(None) == p


class Script:
    """A fake model: one scripted reply per round; records each round's prompt."""

    def __init__(self, replies: list[str]) -> None:
        self.replies, self.prompts = list(replies), []

    def __call__(self, prompt: str, selection: Mapping[int, Sequence[StoredMemory]]
                 ) -> Iterator[int]:
        self.prompts.append(prompt)
        yield from self.replies.pop(0).encode()


def run(replies: list[str], selections: list[dict[int, list[str]]], max_rounds: int = 3
        ) -> tuple[GenerativeState, Script, list[int]]:
    script, state = Script(replies), GenerativeState()
    picks = iter(selections)

    def select(context: str) -> dict[int, list[StoredMemory]]:
        return {layer: [stored(i) for i in ids] for layer, ids in next(picks).items()}

    tokens = list(generative_rounds("Where does Alice work?", select, script,
                                    lambda ids: bytes(ids).decode(), IdProtocol(),
                                    max_rounds, state))
    return state, script, tokens


def test_asked_documents_are_appended_and_routing_runs_again() -> None:
    state, script, tokens = run(
        ["<doc>1</doc> ignored after the request", "In <doc>3</doc>", "Lisbon."],
        [{5: ["a"], 6: ["c"]}, {5: ["b"], 6: ["a"]}, {5: ["b"], 6: ["c"]}])
    assert [r.appended for r in state.rounds] == [["a"], ["b"], []]
    assert [r.asked for r in state.rounds] == [[1], [3], []]
    # handles: a=1, c=2 (round 1), b=3 (round 2); the model reads them by those numbers
    assert "Document [1]: Alice works for Acme." in script.prompts[1]
    assert "[3] Acme is based in Lisbon." in script.prompts[1]  # b's handle, from round 2
    assert "Document [3]: Acme is based in Lisbon." in script.prompts[2]
    assert state.final_text == "Lisbon." and bytes(tokens).decode().endswith("Lisbon.")
    # generation pauses right after a complete request
    assert b"ignored" not in bytes(tokens)


def test_rounds_stop_on_answer_unknown_handle_repeat_or_limit() -> None:
    answered, _, _ = run(["Acme."], [{5: ["a"]}])
    assert len(answered.rounds) == 1 and answered.final_text == "Acme."
    unknown, _, _ = run(["<doc>9</doc>"], [{5: ["a"]}])
    assert len(unknown.rounds) == 1 and unknown.appended == []
    repeat, _, _ = run(["<doc>1</doc>", "<doc>1</doc>"], [{5: ["a"]}, {5: ["a"]}])
    assert len(repeat.rounds) == 2 and [m.id for m in repeat.appended] == ["a"]
    limit, script, _ = run(["<doc>1</doc>", "<doc>2</doc>"], [{5: ["a"]}, {5: ["b"]}], 2)
    assert len(limit.rounds) == 2 and [m.id for m in limit.appended] == ["a"]
    assert limit.final_text == ""  # the last round asked instead of answering
