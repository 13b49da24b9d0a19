"""``msa serve``: the HTTP API (or, with ``--mcp``, the MCP server) over one space.

FastAPI, uvicorn and the model are imported only when the command runs, and an unsafe bind
(no API keys beyond loopback) is refused before the model loads.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from msa_agent.cli.common import CliError, err_console, open_memory
from msa_agent.cli.options import ModelOpt, PathOpt

if TYPE_CHECKING:
    from msa_agent.serve.auth import AuthConfig


class McpTransport(str, Enum):
    stdio = "stdio"
    http = "http"


def serve(
    path: PathOpt = None,
    host: Annotated[str, typer.Option(
        help="Interface to listen on; anything but loopback needs API keys.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8765,
    model: ModelOpt = None,
    keys: Annotated[Path | None, typer.Option(
        "--keys", envvar="MSA_API_KEYS_FILE", show_default=False,
        help="API keys file (JSON or TOML: key -> namespaces, '*' for admin); default "
             "$MSA_API_KEYS (JSON).")] = None,
    api_key: Annotated[str | None, typer.Option(
        "--api-key", envvar="MSA_ADMIN_KEY", show_default=False,
        help="One admin key (every namespace), instead of a keys file.")] = None,
    mcp: Annotated[McpTransport | None, typer.Option(
        help="Serve MCP tools instead of the HTTP API: stdio, or streamable HTTP at "
             "/mcp.")] = None,
    threads: Annotated[int | None, typer.Option(
        min=1, show_default=False,
        help="Requests run at once (the rest queue); default 40.")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level.")] = "info",
) -> None:
    """Serve the space over HTTP (JSON API at /v1, docs at /docs) until Ctrl-C."""
    auth = _auth(keys, api_key)
    if mcp is not None:
        _serve_mcp(path, model, mcp.value, host, port)
        return
    from msa_agent.serve.server import check_bind
    from msa_agent.serve.server import serve as run_server

    check_bind(host, auth)
    with open_memory(path, model=model) as mem:
        err_console().print(f"serving {mem.path} at http://{host}:{port}/v1 "
                            f"({'API keys required' if auth else 'no API keys: loopback only'})",
                            highlight=False)
        run_server(mem, host=host, port=port, auth=auth, threads=threads,
                   log_level=log_level)


def _auth(keys: Path | None, api_key: str | None) -> AuthConfig | None:
    """Keys from ``--keys``, else ``--api-key``, else ``$MSA_API_KEYS``, else none."""
    from msa_agent.serve.auth import AuthConfig

    if keys is not None and api_key is not None:
        raise typer.BadParameter("give --keys or --api-key, not both")
    if keys is not None:
        return AuthConfig.from_file(keys)
    if api_key is not None:
        return AuthConfig.admin_key(api_key)
    return AuthConfig.from_env()


def _serve_mcp(path: Path | None, model: str | None, transport: str, host: str,
               port: int) -> None:
    """The MCP tools (``msa_agent.serve.mcp``); its HTTP transport has no keys, so it too
    stays on loopback."""
    import importlib.util

    from msa_agent.serve.server import is_loopback

    if importlib.util.find_spec("msa_agent.serve.mcp") is None:
        raise CliError("the MCP server (msa_agent.serve.mcp) is not installed in this build")
    if transport == "http" and not is_loopback(host):
        raise CliError(f"refusing to serve MCP over HTTP on {host}: it has no API keys; "
                       "bind 127.0.0.1")
    from msa_agent.serve.mcp import run_mcp

    with open_memory(path, model=model) as mem:
        run_mcp(mem, transport, host, port)
