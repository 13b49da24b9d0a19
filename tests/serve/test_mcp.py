"""The MCP server, driven by the SDK's own client: over stdio (the client spawns the server, as
an MCP client application does) and over streamable HTTP on loopback.

Each transport runs one scripted session in a module fixture (the server process loads torch
once); the tests then check what each call returned.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp")
from mcp import ClientSession  # noqa: E402
from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.types import CallToolResult  # noqa: E402

from msa_agent import Memory  # noqa: E402
from msa_agent.errors import InvalidInputError  # noqa: E402
from msa_agent.serve.mcp import run_mcp  # noqa: E402
from msa_agent.serve.server import UnsafeBindError  # noqa: E402

TESTS = Path(__file__).resolve().parents[1]
LAUNCHER = Path(__file__).with_name("mcp_stdio_server.py")
ENV = {"PYTHONPATH": str(TESTS), "TRITON_INTERPRET": "1"}
FACT = "Alice works for Acme. Acme is based in Lisbon."
OTHER = "Bob likes green tea."
Script = Callable[[ClientSession], Awaitable[dict[str, Any]]]


def _text(result: CallToolResult) -> str:
    return "\n".join(getattr(c, "text", "") for c in result.content)


async def _stdio_script(s: ClientSession) -> dict[str, Any]:
    """Every tool, then refused calls, then a call that shows the server still serves."""
    out: dict[str, Any] = {"tools": (await s.list_tools()).tools}
    out["fact"] = await s.call_tool("remember", {"text": FACT, "metadata": {"topic": "work"}})
    out["other"] = await s.call_tool("remember", {"text": OTHER, "kind": "preference"})
    out["recall"] = await s.call_tool("recall", {"query": "Where is Acme based?", "k": 2,
                                                 "explain": True})
    out["answer"] = await s.call_tool("answer", {"question": "Who works for Acme?", "k": 1})
    fact_id = out["fact"].structured_content["id"]
    out["forget"] = await s.call_tool("forget", {"id": fact_id})
    out["after"] = await s.call_tool("recall", {"query": "Where is Acme based?", "k": 5})
    out["empty_text"] = await s.call_tool("remember", {"text": ""})
    out["forget_nothing"] = await s.call_tool("forget", {})
    out["unknown_id"] = await s.call_tool("forget", {"id": fact_id})
    out["bad_k"] = await s.call_tool("recall", {"query": "tea", "k": "many"})
    out["still_serving"] = await s.call_tool("recall", {"query": "tea", "k": 1})
    return out


async def _session(streams: Any, script: Script) -> dict[str, Any]:
    """Run ``script``; ``out["stray"]`` holds what the transport could not parse."""
    read, write = streams
    stray: list[Exception] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, Exception):
            stray.append(message)

    async with ClientSession(read, write, message_handler=on_message) as session:
        await session.initialize()
        return {**await script(session), "stray": stray}


async def _over_stdio(path: Path, errlog: Any) -> dict[str, Any]:
    params = StdioServerParameters(command=sys.executable, args=[str(LAUNCHER), str(path)],
                                   env=ENV)
    async with stdio_client(params, errlog=errlog) as streams:
        return await _session(streams, _stdio_script)


@pytest.fixture(scope="module")
def stdio_run(tmp_path_factory: pytest.TempPathFactory, http_server: Any) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("mcp-stdio")
    with open(tmp / "server.log", "w") as errlog:
        return anyio.run(_over_stdio, tmp / "m", errlog)


def test_tools_listed_with_schemas(stdio_run: dict[str, Any]) -> None:
    tools = {t.name: t for t in stdio_run["tools"]}
    assert set(tools) == {"remember", "recall", "answer", "forget"}
    assert "query" in tools["recall"].input_schema["properties"]
    assert "hits" in tools["recall"].output_schema["properties"]
    assert tools["forget"].annotations.destructive_hint is True


def test_nothing_but_protocol_on_stdout(stdio_run: dict[str, Any]) -> None:
    assert stdio_run["stray"] == []


def test_remember_then_recall_finds_it(stdio_run: dict[str, Any]) -> None:
    fact = stdio_run["fact"]
    assert not fact.is_error and fact.structured_content["namespace"] == "default"
    hits = stdio_run["recall"].structured_content["hits"]
    ids = [h["id"] for h in hits]
    assert fact.structured_content["id"] in ids
    assert stdio_run["other"].structured_content["id"] in ids
    assert hits[0]["explanation"]["layer_scores"]  # explain=True reaches the hits
    assert fact.structured_content["id"] in _text(stdio_run["recall"])  # readable text too


def test_answer_returns_text(stdio_run: dict[str, Any]) -> None:
    answer = stdio_run["answer"]
    assert not answer.is_error
    assert isinstance(answer.structured_content["text"], str)
    assert answer.structured_content["rounds"][0]["memories"]
    assert "memories read:" in _text(answer)


def test_forget_removes_it(stdio_run: dict[str, Any]) -> None:
    assert stdio_run["forget"].structured_content == {"deleted": 1}
    left = [h["id"] for h in stdio_run["after"].structured_content["hits"]]
    assert left == [stdio_run["other"].structured_content["id"]]


@pytest.mark.parametrize(("call", "message"), [
    ("empty_text", "text is empty"), ("forget_nothing", "exactly one of id or where"),
    ("unknown_id", "no memory with id"), ("bad_k", "valid integer")])
def test_bad_input_is_a_tool_error(stdio_run: dict[str, Any], call: str, message: str) -> None:
    result = stdio_run[call]
    assert result.is_error and message in _text(result)


def test_server_survives_bad_input(stdio_run: dict[str, Any]) -> None:
    result = stdio_run["still_serving"]
    assert not result.is_error and len(result.structured_content["hits"]) == 1


# ---------------------------------------------------------------- streamable HTTP
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the MCP HTTP server exited early"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listening on port {port}")


async def _http_script(s: ClientSession) -> dict[str, Any]:
    out = {"fact": await s.call_tool("remember", {"text": FACT, "namespace": "web"})}
    out["recall"] = await s.call_tool("recall", {"query": "Acme", "k": 1, "namespace": "web"})
    return out


async def _over_http(url: str) -> dict[str, Any]:
    async with streamable_http_client(url) as streams:
        return await _session(streams, _http_script)


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen, int]]:
    """The HTTP server process; the stdio session asks for it first, so both servers load
    torch at the same time."""
    tmp, port = tmp_path_factory.mktemp("mcp-http"), _free_port()
    with open(tmp / "server.log", "w") as log:
        proc = subprocess.Popen([sys.executable, str(LAUNCHER), str(tmp / "m"), "http",
                                 str(port)], env={**ENV, "PATH": "/usr/bin:/bin"},
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            yield proc, port
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def test_streamable_http_remember_and_recall(http_server: tuple[subprocess.Popen, int]) -> None:
    proc, port = http_server
    _wait_listening(port, proc)
    out = anyio.run(_over_http, f"http://127.0.0.1:{port}/mcp")
    fact = out["fact"].structured_content
    assert fact["namespace"] == "web" and out["stray"] == []
    assert [h["id"] for h in out["recall"].structured_content["hits"]] == [fact["id"]]


@pytest.mark.filterwarnings("ignore::msa_agent.errors.RoutingQualityWarning")
def test_run_mcp_refuses_unknown_transport_and_open_bind(tmp_path: Path, tiny_pair: Any) -> None:
    with Memory.open(tmp_path / "m", model=tiny_pair, chunk_size=8) as mem:
        with pytest.raises(InvalidInputError, match="transport"):
            run_mcp(mem, "carrier-pigeon")
        with pytest.raises(UnsafeBindError, match="without API keys"):
            run_mcp(mem, "http", "0.0.0.0", 8765)
