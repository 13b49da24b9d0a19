"""The memory as MCP tools (remember, recall, answer, forget) with the official ``mcp`` SDK.

Each tool returns structured content (a pydantic model, advertised as the tool's output
schema) and a short readable text for the model. A refused call (empty text, unknown id,
forget with nothing to match) comes back as a tool error (``is_error``) carrying our message,
never as a crash of the server. Served over stdio (an MCP client spawns ``msa serve --mcp
stdio``) or streamable HTTP (``--mcp http``, endpoint ``/mcp``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Annotated, Any, ParamSpec, TypeVar

from pydantic import BaseModel, Field

try:
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp.types import CallToolResult, TextContent, ToolAnnotations
except ImportError as exc:  # the serve extra is not installed, or mcp 1.x (FastMCP)
    raise ImportError(f"the MCP server needs the MCP SDK 2.x ({exc}): "
                      "pip install 'msa-agent[serve]'") from exc

from msa_agent.errors import InvalidInputError, MsaError
from msa_agent.memory import Memory
from msa_agent.types import Answer, RecallHit

TRANSPORTS = {"stdio": "stdio", "http": "streamable-http", "streamable-http": "streamable-http"}
PREVIEW_CHARS = 200
INSTRUCTIONS = (
    "Long-term memory. Call `remember` to store a fact or note worth keeping, `recall` to "
    "find stored memories relevant to a query (best first, with ids), `answer` to get an "
    "answer written from memory, and `forget` to delete a memory by id (or every match of "
    "`where`). Memories live in namespaces; omit `namespace` for the default one.")

P = ParamSpec("P")
R = TypeVar("R")


class Remembered(BaseModel):
    id: str = Field(description="The new memory's id (the first part's, for a long text).")
    namespace: str


class Recalled(BaseModel):
    hits: list[RecallHit] = Field(description="Best first.")


class Forgotten(BaseModel):
    deleted: int = Field(description="Memories (parts) deleted.")


def _tool_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Our refusals become tool errors with our message (the client's model reads it)."""

    @wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except MsaError as exc:
            raise ToolError(str(exc)) from exc
    return call


def _result(model: BaseModel, text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)],
                          structured_content=model.model_dump(mode="json"))


def _preview(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= PREVIEW_CHARS else flat[:PREVIEW_CHARS - 1] + "…"


def _hits_text(hits: list[RecallHit]) -> str:
    if not hits:
        return "No memory matched."
    return "\n".join(f"{i}. [{h.id}] (score {h.score:.3f}, {h.kind}) {_preview(h.text)}"
                     for i, h in enumerate(hits, 1))


def build_mcp(memory: Memory) -> MCPServer:
    """An MCP server whose four tools act on ``memory`` (kept open by the caller)."""
    server = MCPServer("msa-agent", instructions=INSTRUCTIONS, log_level="WARNING")
    for tool, hints in _tools(memory):
        server.add_tool(_tool_errors(tool), annotations=hints)
    return server


def _tools(memory: Memory) -> list[tuple[Callable[..., CallToolResult], ToolAnnotations]]:
    def remember(text: str, kind: str = "document", metadata: dict[str, Any] | None = None,
                 namespace: str | None = None) -> Annotated[CallToolResult, Remembered]:
        """Store a memory (a fact, note or document); returns its id."""
        mid = memory.remember(text, kind=kind, metadata=metadata, namespace=namespace)
        ns = memory.get(mid, namespace=namespace).namespace
        return _result(Remembered(id=mid, namespace=ns), f"Remembered as {mid} in {ns}.")

    def recall(query: str, k: int = 5, namespace: str | None = None,
               where: dict[str, Any] | None = None,
               explain: bool = False) -> Annotated[CallToolResult, Recalled]:
        """The k memories most relevant to the query, best first. ``where``: equality filters
        on kind, session_id, user_id, agent_id, source_id or metadata keys. ``explain``: add
        each hit's per-layer routing scores and matched chunk."""
        hits = memory.recall(query, k=k, where=where, namespace=namespace, explain=explain)
        return _result(Recalled(hits=hits), _hits_text(hits))

    def answer(question: str, k: int | None = None,
               namespace: str | None = None) -> Annotated[CallToolResult, Answer]:
        """Answer a question from memory; the reply cites the memories it read."""
        result = memory.answer(question, k=k, namespace=namespace)
        assert isinstance(result, Answer)  # stream=False
        read = sorted({h.id for r in result.rounds for h in r.memories})
        return _result(result, f"{result.text.strip()}\n\n(memories read: {', '.join(read)})")

    def forget(id: str | None = None, where: dict[str, Any] | None = None,
               namespace: str | None = None) -> Annotated[CallToolResult, Forgotten]:
        """Delete a memory by id (all its parts), or every memory matching ``where``.
        Give exactly one of them."""
        if (id is None) == (where is None):
            raise InvalidInputError("forget takes exactly one of id or where")
        n = memory.forget(id, where=where, namespace=namespace)
        return _result(Forgotten(deleted=n), f"Deleted {n} memor{'y' if n == 1 else 'ies'}.")

    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)
    return [(remember, ToolAnnotations(destructive_hint=False, open_world_hint=False)),
            (recall, read_only), (answer, read_only),
            (forget, ToolAnnotations(destructive_hint=True, idempotent_hint=True,
                                     open_world_hint=False))]


def run_mcp(memory: Memory, transport: str = "stdio", host: str = "127.0.0.1",
            port: int = 8765) -> None:
    """Serve ``memory`` over MCP until stopped: ``"stdio"`` (the client spawns this process
    and speaks on stdin/stdout; nothing else may print there) or ``"http"`` (streamable
    HTTP at ``http://host:port/mcp``, loopback only: the MCP endpoint takes no API keys, so
    anyone reaching another interface could read and erase every memory)."""
    if transport not in TRANSPORTS:
        raise InvalidInputError(f"MCP transport must be one of {sorted(TRANSPORTS)}, "
                                f"got {transport!r}")
    if TRANSPORTS[transport] == "stdio":
        build_mcp(memory).run("stdio")
        return
    from msa_agent.serve.server import check_bind  # the HTTP API's rule for an open server

    check_bind(host, None)
    build_mcp(memory).run("streamable-http", host=host, port=port)
