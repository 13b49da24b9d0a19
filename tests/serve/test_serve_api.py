# ruff: noqa: F811 - pytest fixtures imported from serve_fixtures are parameters here
"""Every endpoint of the HTTP API against a real uvicorn on loopback, called with httpx.

Results are compared with the in-process ``Memory`` they serve, so the server adds transport
and nothing else. Each test writes in its own namespace (the Memory is shared per module).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from serve_fixtures import NOTES, api, memory, open_url  # noqa: F401 - fixtures

from msa_agent import Memory
from msa_agent.errors import InvalidInputError
from msa_agent.serve.app import create_app
from msa_agent.serve.server import background_server
from msa_agent.types import Answer, MemoryRecord, RecallHit

pytestmark = pytest.mark.filterwarnings("ignore::msa_agent.runtime.engine.RoutingQualityWarning")


def error(r: httpx.Response, status: int) -> str:
    """The error name of a refused request (and the status and body shape checked)."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "detail"}, body
    return body["error"]


def test_remember_recall_and_explain_match_the_library(api: httpx.Client,
                                                       memory: Memory) -> None:
    ids = api.post("/memories/batch", json={"items": NOTES, "namespace": "recall"}).json()["ids"]
    assert len(ids) == len(NOTES)
    body = {"query": "capital of France", "k": 2, "namespace": "recall", "explain": True}
    r = api.post("/recall", json=body)
    assert r.status_code == 200, r.text
    hits = [RecallHit.model_validate(h) for h in r.json()["hits"]]
    local = memory.recall("capital of France", k=2, namespace="recall", explain=True)
    assert [h.id for h in hits] == [h.id for h in local]
    assert hits[0].explanation is not None and hits[0].explanation.layer_scores
    assert hits[0].explanation.best_chunk_text
    assert set(r.json()["hits"][0]["explanation"]) >= {"layer_scores", "best_chunk",
                                                        "best_chunk_text", "channels"}


def test_recall_filters_paging_hops_and_routing(api: httpx.Client) -> None:
    items = [{"text": t, "kind": "fact" if i % 2 else "note", "metadata": {"i": i}}
             for i, t in enumerate(NOTES)]
    api.post("/memories/batch", json={"items": items, "namespace": "filters"})
    base = {"query": "Who works where?", "namespace": "filters", "k": 4}
    facts = api.post("/recall", json={**base, "where": {"kind": "fact"}}).json()["hits"]
    assert facts and {h["kind"] for h in facts} == {"fact"}
    first = api.post("/recall", json={**base, "k": 1}).json()["hits"]
    second = api.post("/recall", json={**base, "k": 1, "offset": 1}).json()["hits"]
    assert first[0]["id"] != second[0]["id"]
    hops = api.post("/recall", json={**base, "hops": "auto", "routing": "msa"})
    assert hops.status_code == 200 and hops.json()["hits"]
    lexical = api.post("/recall", json={**base, "routing": "lexical", "query": "green tea"})
    assert lexical.json()["hits"][0]["text"] == "Bob likes green tea."
    none = api.post("/recall", json={**base, "until": "2000-01-01T00:00:00Z"}).json()["hits"]
    assert none == []


def test_get_list_update_history_forget(api: httpx.Client) -> None:
    mid = api.post("/memories", json={"text": "Carol plays violin.", "kind": "fact",
                                      "metadata": {"day": "tue"}, "namespace": "crud",
                                      "user_id": "carol"}).json()["id"]
    got = MemoryRecord.model_validate(api.get(f"/memories/{mid}",
                                              params={"namespace": "crud"}).json())
    assert (got.text, got.kind, got.metadata, got.user_id) == (
        "Carol plays violin.", "fact", {"day": "tue"}, "carol")
    r = api.patch(f"/memories/{mid}", params={"namespace": "crud"},
                  json={"text": "Carol plays cello.", "metadata": {"room": 4}})
    assert r.json() == {"id": mid}
    listed = api.get("/memories", params={"namespace": "crud",
                                          "where": json.dumps({"room": 4})}).json()
    assert [(m["text"], m["metadata"]) for m in listed] == [
        ("Carol plays cello.", {"day": "tue", "room": 4})]
    events = api.get(f"/memories/{mid}/history", params={"namespace": "crud"}).json()
    assert [e["event"] for e in events] == ["add", "update"]
    assert api.delete(f"/memories/{mid}", params={"namespace": "crud"}).json() == {"deleted": 1}
    assert error(api.get(f"/memories/{mid}", params={"namespace": "crud"}), 404) \
        == "UnknownMemoryError"
    assert api.get(f"/memories/{mid}/history",
                   params={"namespace": "crud"}).json()[-1]["event"] == "forget"


def test_upsert_dedupe_and_forget_where_and_all(api: httpx.Client) -> None:
    body = {"text": "The door code is 1234.", "key": "door", "namespace": "upsert"}
    first = api.post("/memories", json=body).json()["id"]
    again = api.post("/memories", json={**body, "text": "The door code is 9876."}).json()["id"]
    assert first == again
    assert api.get(f"/memories/{first}", params={"namespace": "upsert"}).json()["text"] \
        == "The door code is 9876."
    same = [api.post("/memories", json={"text": "Twice.", "namespace": "upsert",
                                        "dedupe": True}).json()["id"] for _ in range(2)]
    assert same[0] == same[1]
    api.post("/memories", json={"text": "Temp one.", "namespace": "upsert", "kind": "tmp"})
    r = api.post("/forget", json={"where": {"kind": "tmp"}, "namespace": "upsert"})
    assert r.json() == {"deleted": 1}
    assert api.post("/forget", json={"namespace": "upsert", "all": True}).json() == {"deleted": 2}
    assert api.get("/memories", params={"namespace": "upsert"}).json() == []


def test_answer_whole_and_streamed_over_sse(api: httpx.Client) -> None:
    api.post("/memories/batch", json={"items": NOTES, "namespace": "answer"})
    body = {"question": "What is the capital of France?", "namespace": "answer",
            "max_new_tokens": 6, "k": 2}
    whole = Answer.model_validate(api.post("/answer", json=body).json())
    assert whole.rounds and whole.rounds[0].memories
    with api.stream("POST", "/answer", json={**body, "stream": True}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    tokens = [json.loads(x[5:])["token"] for x in lines[:-2] if x.startswith("data:")]
    assert lines[-2] == "event: done"
    done = Answer.model_validate_json(lines[-1][5:])
    assert "".join(tokens).strip() == done.text == whole.text  # greedy: the same answer
    assert done.generated_tokens == whole.generated_tokens


def test_namespaces_stats_health_and_openapi(api: httpx.Client, memory: Memory,
                                             open_url: str) -> None:
    api.post("/memories", json={"text": "Stats note.", "namespace": "stats"})
    assert "stats" in api.get("/namespaces").json()
    stats = api.get("/stats").json()
    assert stats == memory.stats().model_dump(mode="json")
    health = api.get("/health").json()
    assert health == {"status": "ok", "model": stats["model"], "memories": stats["memories"]}
    schemas = httpx.get(f"{open_url}/openapi.json").json()["components"]["schemas"]
    assert {"RecallHit", "Explanation", "MemoryRecord", "SpaceStats", "Answer",
            "ErrorBody"} <= set(schemas)
    assert set(schemas["RecallHit"]["properties"]) == set(RecallHit.model_fields)
    hits = schemas["RecallResponse"]["properties"]["hits"]["items"]
    assert hits == {"$ref": "#/components/schemas/RecallHit"}


def test_export_and_import_round_trip(api: httpx.Client, tmp_path: Path) -> None:
    api.post("/memories/batch", json={"items": NOTES[:2], "namespace": "bundle"})
    bundle = tmp_path / "b.msa"
    r = api.post("/export", json={"path": str(bundle), "namespaces": ["bundle"]})
    assert r.status_code == 200, r.text
    assert r.json()["memories"] == 2 and bundle.exists()
    again = api.post("/import", json={"path": str(bundle), "namespace": "bundle"}).json()
    assert (again["imported"], again["skipped"]) == (0, 2)  # ids are kept: present, skipped
    api.post("/forget", json={"namespace": "bundle", "all": True})
    back = api.post("/import", json={"path": str(bundle), "namespace": "bundle"}).json()
    assert (back["imported"], back["skipped"]) == (2, 0)
    assert len(api.get("/memories", params={"namespace": "bundle"}).json()) == 2


@pytest.mark.parametrize(("method", "path", "body", "status"), [
    ("POST", "/memories", {"text": ""}, 422),                      # empty
    ("POST", "/memories", {"text": "   \n"}, 422),                 # blank
    ("POST", "/memories", {"text": "a\x00b\x01\x02"}, 422),        # binary
    ("POST", "/memories", {"txt": "typo"}, 422),                   # unknown field
    ("POST", "/memories", {"text": 3}, 422),                       # wrong type
    ("POST", "/memories/batch", {"items": ["ok", ""]}, 422),       # one bad item: none stored
    ("POST", "/recall", {"query": "x", "k": 0}, 422),
    ("POST", "/recall", {"query": "x", "where": {"a": {"b": 1}}}, 422),
    ("POST", "/recall", {"query": "x", "hops": "many"}, 422),
    ("POST", "/forget", {"where": {}, "namespace": "errors"}, 422),
    ("PATCH", "/memories/nope", {"text": "x"}, 404),
    ("DELETE", "/memories/nope", None, 404),
    ("GET", "/memories/nope/history", None, 404),
    ("GET", "/memories?where=not-json", None, 422),
    ("GET", "/memories?limit=-1", None, 422),
])
def test_bad_requests_get_clear_json_errors(api: httpx.Client, method: str, path: str,
                                            body: object, status: int) -> None:
    before = len(api.get("/memories", params={"limit": 10_000}).json())
    r = api.request(method, path, json=body)
    name = error(r, status)  # the library's exception name, e.g. StoreInputError for a filter
    assert name == "UnknownMemoryError" if status == 404 else name.endswith("InputError")
    assert r.json()["detail"]
    assert len(api.get("/memories", params={"limit": 10_000}).json()) == before


def test_huge_and_undecodable_bodies_are_refused(api: httpx.Client) -> None:
    huge = api.post("/memories", content=b'{"text": "' + b"a" * (17 * 2**20) + b'"}',
                    headers={"content-type": "application/json"})
    assert error(huge, 413) == "PayloadTooLarge"
    chunked = api.post("/memories", content=iter([b'{"text": "', b"a" * (17 * 2**20), b'"}']),
                       headers={"content-type": "application/json"})
    assert error(chunked, 413) == "PayloadTooLarge"
    raw = api.post("/memories", content=b"\xff\xfe\x00binary",
                   headers={"content-type": "application/json"})
    assert error(raw, 400) == "InvalidInputError"
    assert error(api.get("/no-such-route"), 404) == "NotFound"


def test_threads_option_serves_and_a_zero_is_refused(memory: Memory) -> None:
    memory.remember("Bob likes green tea.", namespace="threads")
    with background_server(create_app(memory, threads=2)) as url:
        r = httpx.post(f"{url}/v1/recall", json={"query": "green tea", "k": 1,
                                                 "namespace": "threads"})
        assert r.status_code == 200 and len(r.json()["hits"]) == 1
    with pytest.raises(InvalidInputError, match="threads"):
        create_app(memory, threads=0)


def test_the_answer_schema_offers_every_read_mode() -> None:
    """The server's ``read`` choices are the library's (a new mode reaches HTTP clients)."""
    from typing import get_args

    from msa_agent.config import READ_MODES
    from msa_agent.serve.schemas import AnswerRequest

    assert set(get_args(AnswerRequest.model_fields["read"].annotation)) == set(READ_MODES)
