# ruff: noqa: F811 - pytest fixtures imported from serve_fixtures are parameters here
"""``MemoryClient`` and the CLI against a running server; ``msa serve`` itself as a process.

The client must give what the library gives (same types, same errors), and ``msa recall``
with ``$MSA_SERVER_URL`` must answer without importing the model stack.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from serve_fixtures import NOTES, memory, open_url  # noqa: F401
from typer.testing import CliRunner

from msa_agent import Memory
from msa_agent.cli import app
from msa_agent.errors import InvalidInputError, UnknownMemoryError
from msa_agent.serve.client import MemoryClient, ServerError
from msa_agent.types import Answer
from msa_testing import make_llama, make_tokenizer

pytestmark = pytest.mark.filterwarnings("ignore::msa_agent.runtime.engine.RoutingQualityWarning")
HEAVY = ("torch", "transformers", "zarr", "sqlalchemy", "numpy")


def test_client_gives_the_library_results_and_errors(open_url: str, memory: Memory) -> None:
    with MemoryClient(open_url, namespace="client") as mem:
        ids = mem.remember_many(NOTES)
        one = mem.remember("Carol plays violin.", kind="fact", metadata={"day": "tue"})
        assert mem.namespaces().count("client") == 1
        hits = mem.recall("capital of France", k=3, explain=True)
        local = memory.recall("capital of France", k=3, namespace="client", explain=True)
        assert hits == local
        assert mem.get(one) == memory.get(one, namespace="client")
        assert [r.id for r in mem.list()] == [*ids, one]
        assert mem.update(one, metadata={"room": 4}) == one
        assert [e.event for e in mem.history(one)] == ["add", "update"]
        assert mem.stats() == memory.stats()
        assert mem.forget(one) == 1
        assert mem.forget(where={"kind": "document"}) == len(NOTES)
        with pytest.raises(UnknownMemoryError):
            mem.get(one)
        with pytest.raises(InvalidInputError, match="empty"):
            mem.remember("  ")


def test_client_streams_an_answer(open_url: str) -> None:
    with MemoryClient(open_url, namespace="client-answer") as mem:
        mem.remember_many(NOTES)
        pieces = list(mem.answer_stream("Where does Alice work?", k=2, max_new_tokens=5))
        whole = mem.answer("Where does Alice work?", k=2, max_new_tokens=5)
    assert isinstance(pieces[-1], Answer) and all(isinstance(p, str) for p in pieces[:-1])
    assert pieces[-1].text == whole.text == "".join(pieces[:-1]).strip()


def test_client_says_when_no_server_answers() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with MemoryClient(f"http://127.0.0.1:{port}") as mem, pytest.raises(ServerError,
                                                                       match="msa serve"):
        mem.recall("anything")


def test_cli_read_commands_use_the_configured_server(open_url: str, memory: Memory,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    memory.remember_many(NOTES, dedupe=False)
    monkeypatch.setenv("MSA_SERVER_URL", open_url)
    runner = CliRunner()
    nowhere = str(tmp_path / "no-space")  # --path is not used when a server is configured
    r = runner.invoke(app, ["recall", "capital of France", "-k", "2", "--json", "-p", nowhere])
    assert r.exit_code == 0, r.output
    assert [h["id"] for h in json.loads(r.stdout)] == [
        h.id for h in memory.recall("capital of France", k=2)]
    r = runner.invoke(app, ["ls", "--json", "--limit", "3", "-p", nowhere])
    assert [m["id"] for m in json.loads(r.stdout)] == [m.id for m in memory.list(limit=3)]
    r = runner.invoke(app, ["stats", "--json", "-p", nowhere])
    assert json.loads(r.stdout)["memories"] == memory.stats().memories
    one = memory.list(limit=1)[0]
    r = runner.invoke(app, ["show", one.id, "--json", "-p", nowhere])
    assert r.exit_code == 0 and json.loads(r.stdout)["text"] == one.text, r.output
    r = runner.invoke(app, ["ask", "Where is Paris?", "--json", "--max-tokens", "3", "-p",
                            nowhere])
    assert r.exit_code == 0, r.output
    want = memory.answer("Where is Paris?", max_new_tokens=3)  # ask reads answer_k too
    assert json.loads(r.stdout)["text"] == want.text
    r = runner.invoke(app, ["ask", "Where is Paris?", "--max-tokens", "3", "-p", nowhere])
    assert r.exit_code == 0 and want.text in r.stdout, r.output  # streamed over SSE
    gone = memory.remember("A note to forget through the server.")
    r = runner.invoke(app, ["forget", gone, "--yes", "--compact", "--json", "-p", nowhere])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["deleted"] == 1 and "bytes_after" in json.loads(r.stdout)
    with pytest.raises(UnknownMemoryError):
        memory.get(gone)
    r = runner.invoke(app, ["compact", "--json", "-p", nowhere])
    assert r.exit_code == 0 and "bytes_before" in json.loads(r.stdout), r.output


def test_cli_recall_through_a_server_imports_no_model_stack(open_url: str) -> None:
    probe = ("import json, sys\nfrom msa_agent.cli import main\nsys.argv = ['msa', 'recall', "
             "'capital', '--json']\ntry:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
             f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]), file=sys.stderr)")
    env = {**os.environ, "MSA_SERVER_URL": open_url}
    run = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                         text=True, timeout=60, check=False)
    assert isinstance(json.loads(run.stdout), list), run.stderr
    assert json.loads(run.stderr.strip().splitlines()[-1]) == [], run.stderr


def test_msa_serve_refuses_an_open_server_off_loopback(tmp_path: Path) -> None:
    runner = CliRunner()
    for extra in ([], ["--mcp", "http"]):
        r = runner.invoke(app, ["serve", "--host", "0.0.0.0", "-p", str(tmp_path), *extra],
                          env={"MSA_API_KEYS": ""})
        assert r.exit_code == 1, r.output
        assert "refusing" in r.stderr and "0.0.0.0" in r.stderr


def test_msa_serve_runs_a_server_process(tmp_path: Path) -> None:
    """The real command: a space, ``msa serve`` in a subprocess, a key, a request, Ctrl-C."""
    model = tmp_path / "model"
    make_llama().save_pretrained(model)
    make_tokenizer().save_pretrained(model)
    space = tmp_path / "space"
    with Memory.open(space, str(model), chunk_size=8) as mem:
        mem.remember_many(NOTES)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MSA_ADMIN_KEY": "sk-test-0123456789", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "msa_agent.cli", "serve", "-p", str(space), "--port",
           str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        url = f"http://127.0.0.1:{port}/v1"
        _wait_for(url, proc)
        assert httpx.post(f"{url}/recall", json={"query": "tea"}).status_code == 401
        with MemoryClient(f"http://127.0.0.1:{port}", api_key="sk-test-0123456789") as c:
            assert c.recall("Bob likes green tea", k=1, routing="lexical")[0].text == NOTES[2]
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert Memory.exists(space)


def _wait_for(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.communicate()[1])
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("msa serve did not answer")


def test_expiry_through_the_server(open_url: str, memory: Memory) -> None:
    from datetime import timedelta

    with MemoryClient(open_url, namespace="expiry") as mem:
        gone = mem.remember("The old door code is 4711.", expires_at="2020-01-01T00:00:00Z")
        kept = mem.remember("The door code is 9902.", ttl=timedelta(hours=1))
        assert [r.id for r in mem.list()] == [kept]
        assert [r.id for r in mem.list(include_expired=True)] == [gone, kept]
        assert gone not in {h.id for h in mem.recall("door code", k=5)}
        assert mem.get(kept).expires_at is not None
        with pytest.raises(InvalidInputError):
            mem.remember("both", expires_at="2030-01-01T00:00:00Z", ttl=60)
