# ruff: noqa: F811 - pytest fixtures imported from serve_fixtures are parameters here
"""API keys and tenant isolation on a real server: no key, wrong key, another tenant's data.

The keyed server shares one Memory with three keys: admin ("*"), alice (namespace alice) and
bob (namespace bob). Everything alice can reach of bob's must look like nothing at all (404)
or be refused outright (403), and bob's memories must be unchanged afterwards.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from serve_fixtures import ADMIN, ALICE, BOB, keyed, keyed_url, memory  # noqa: F401

from msa_agent.errors import InvalidInputError
from msa_agent.serve.auth import AuthConfig, ForbiddenError, MissingKeyError
from msa_agent.serve.server import UnsafeBindError, check_bind, is_loopback

pytestmark = pytest.mark.filterwarnings("ignore::msa_agent.runtime.engine.RoutingQualityWarning")


@pytest.fixture(scope="module")
def tenants(keyed_url: str) -> dict[str, str]:
    """One memory each for alice and bob, stored with their own keys (no namespace given)."""
    ids = {}
    for key, text in ((ALICE, "Alice's locker code is 4711."), (BOB, "Bob's locker code is 1234.")):
        with keyed(keyed_url, key) as api:
            r = api.post("/memories", json={"text": text})
            assert r.status_code == 200, r.text
            ids[key] = r.json()["id"]
    return ids


def test_requests_without_a_valid_key_are_refused(keyed_url: str) -> None:
    for key in (None, "sk-wrong-0123456789"):
        with keyed(keyed_url, key) as api:
            for method, path, body in (("GET", "/memories", None), ("GET", "/stats", None),
                                       ("POST", "/recall", {"query": "locker code"}),
                                       ("POST", "/memories", {"text": "sneaky"})):
                r = api.request(method, path, json=body)
                assert r.status_code == 401, (key, path, r.text)
                assert r.json()["error"] == "MissingKeyError"
                assert r.headers["www-authenticate"] == "Bearer"
            health = api.get("/health")  # liveness stays open, without the count
            assert health.status_code == 200 and health.json()["memories"] is None


def test_x_api_key_header_and_bearer_both_work(keyed_url: str, tenants: dict[str, str]) -> None:
    r = httpx.get(f"{keyed_url}/v1/memories", headers={"X-API-Key": ALICE})
    assert [m["id"] for m in r.json()] == [tenants[ALICE]]
    with keyed(keyed_url, ALICE) as api:
        assert [m["id"] for m in api.get("/memories").json()] == [tenants[ALICE]]


def test_a_tenant_key_cannot_read_another_namespace(keyed_url: str,
                                                    tenants: dict[str, str]) -> None:
    bobs = tenants[BOB]
    with keyed(keyed_url, ALICE) as api:
        hits = api.post("/recall", json={"query": "Bob's locker code", "k": 5}).json()["hits"]
        assert [h["id"] for h in hits] == [tenants[ALICE]]
        assert api.get("/namespaces").json() == ["alice"]
        stats = api.get("/stats").json()
        assert stats["namespaces"] == {"alice": 1} and stats["memories"] == 1
        assert api.get("/health").json()["memories"] == 1
        for method, path in (("GET", f"/memories/{bobs}"), ("GET", f"/memories/{bobs}/history"),
                             ("DELETE", f"/memories/{bobs}"), ("PATCH", f"/memories/{bobs}")):
            body = {"text": "overwritten"} if method == "PATCH" else None
            r = api.request(method, path, json=body)
            assert r.status_code == 404, (path, r.text)  # by id: as if it did not exist
            r = api.request(method, path, json=body, params={"namespace": "bob"})
            assert r.status_code == 403 and r.json()["error"] == "ForbiddenError", path
        for path, body in (("/recall", {"query": "code", "namespace": "bob"}),
                           ("/memories", {"text": "x", "namespace": "bob"}),
                           ("/memories/batch", {"items": ["mine", {"text": "x",
                                                                   "namespace": "bob"}]}),
                           ("/forget", {"namespace": "bob", "all": True}),
                           ("/answer", {"question": "code?", "namespace": "bob"})):
            assert api.post(path, json=body).status_code == 403, path
        assert api.get("/memories", params={"namespace": "bob"}).status_code == 403
        assert len(api.get("/memories").json()) == 1  # the refused batch stored nothing
    with keyed(keyed_url, BOB) as api:
        assert api.get(f"/memories/{bobs}").json()["text"] == "Bob's locker code is 1234."


def test_admin_actions_need_the_admin_key(keyed_url: str, tenants: dict[str, str],
                                          tmp_path: Path) -> None:
    bundle = str(tmp_path / "b.msa")
    with keyed(keyed_url, ALICE) as api:
        for path, body in (("/export", {"path": bundle}), ("/import", {"path": bundle}),
                           ("/compact", None)):
            r = api.post(path, json=body)
            assert r.status_code == 403 and "admin" in r.json()["detail"], path
    with keyed(keyed_url, ADMIN) as api:
        assert {"alice", "bob"} <= set(api.get("/namespaces").json())
        assert api.get(f"/memories/{tenants[BOB]}", params={"namespace": "bob"}).status_code \
            == 200
        assert api.post("/export", json={"path": bundle, "namespaces": ["alice"]}).json()[
            "memories"] == 1


def test_an_open_server_is_refused_off_loopback() -> None:
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.com"):
        assert not is_loopback(host)
        with pytest.raises(UnsafeBindError, match="without API keys"):
            check_bind(host, None)
        check_bind(host, AuthConfig.admin_key("sk-admin-0123456789"))  # with keys: allowed
    for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"):
        assert is_loopback(host)
        check_bind(host, None)


def test_keys_file_formats_and_mistakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "keys.json").write_text('{"keys": {"sk-a-01234567": ["a"], '
                                        '"sk-root-0123456": "*"}}')
    (tmp_path / "keys.toml").write_text('[keys]\n"sk-a-01234567" = ["a", "b"]\n')
    from_json = AuthConfig.from_file(tmp_path / "keys.json")
    assert from_json.principal("sk-root-0123456").admin
    assert from_json.principal("sk-a-01234567").namespaces == {"a"}
    assert AuthConfig.from_file(tmp_path / "keys.toml").principal(
        "sk-a-01234567").namespaces == {"a", "b"}
    monkeypatch.setenv("MSA_API_KEYS", '{"sk-env-0123456": ["x"]}')
    env = AuthConfig.from_env()
    assert env is not None and env.principal("sk-env-0123456").namespace(None, "d") == "x"
    with pytest.raises(ForbiddenError):
        env.principal("sk-env-0123456").namespace("y", "d")
    with pytest.raises(MissingKeyError):
        env.principal("sk-env-0123457")
    (tmp_path / "bad.json").write_text('{"keys": {"short": ["a"]}}')
    for bad in ("bad.json", "missing.toml"):
        with pytest.raises(InvalidInputError):
            AuthConfig.from_file(tmp_path / bad)
    with pytest.raises(InvalidInputError, match="no namespaces"):
        AuthConfig.from_mapping({"sk-empty-012345": []})
