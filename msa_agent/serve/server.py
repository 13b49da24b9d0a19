"""Run the HTTP API with uvicorn: in the foreground (``msa serve``) or in a background thread.

A server without API keys is only allowed on loopback: anyone who can reach another
interface could read and erase every memory, so :func:`check_bind` refuses that before a
socket is opened.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from msa_agent.errors import MsaError
from msa_agent.memory import Memory
from msa_agent.serve.app import create_app
from msa_agent.serve.auth import AuthConfig

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8765


class UnsafeBindError(MsaError):
    """An open server (no API keys) asked to listen beyond loopback."""


def is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, auth: AuthConfig | None) -> None:
    """Refuse to serve without keys on any interface but loopback."""
    if auth is None and not is_loopback(host):
        raise UnsafeBindError(
            f"refusing to listen on {host} without API keys: anyone reaching it could read "
            "and erase every memory. Give keys (--keys FILE, $MSA_API_KEYS or --api-key) or "
            "bind 127.0.0.1")


def serve(memory_or_path: Memory | str | Path, *, host: str = DEFAULT_HOST,
          port: int = DEFAULT_PORT, auth: AuthConfig | None = None, model: str | None = None,
          threads: int | None = None, log_level: str = "info") -> None:
    """Serve until interrupted (Ctrl-C). One worker process: the space has one writer."""
    check_bind(host, auth)
    app = create_app(memory_or_path, auth=auth, model=model, threads=threads)
    uvicorn.run(app, host=host, port=port, log_level=log_level, workers=1)


@contextmanager
def background_server(app: FastAPI, host: str = DEFAULT_HOST, port: int = 0,
                      log_level: str = "warning") -> Iterator[str]:
    """Run ``app`` in a daemon thread for the ``with`` block; yields its base URL.

    ``port=0`` takes a free port (the socket is bound here, then handed to uvicorn, so no
    other process can take it in between); :func:`check_bind` applies to ``app``'s keys. For
    tests, benchmarks and notebooks."""
    check_bind(host, app.state.auth)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        _wait_started(server, thread)
        bound = sock.getsockname()[1]
        yield f"http://{host if ':' not in host else f'[{host}]'}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _wait_started(server: uvicorn.Server, thread: threading.Thread,
                  timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive():
            raise MsaError("the server stopped while starting (see its log above)")
        if time.monotonic() > deadline:
            raise MsaError(f"the server did not start within {timeout:.0f} s")
        time.sleep(0.02)
