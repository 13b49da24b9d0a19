"""Serve a tiny random-model memory over MCP, for the tests: ``python mcp_stdio_server.py PATH
[stdio|http PORT]``. ``tests/`` must be on ``PYTHONPATH`` (for ``msa_testing``)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from msa_agent import Memory
from msa_agent.serve.mcp import run_mcp
from msa_testing import make_llama, make_tokenizer


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """The tokenizer trainer prints progress on fd 1, which is the MCP channel on stdio."""
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def main(path: str, transport: str = "stdio", port: str = "0") -> None:
    torch.set_num_threads(1)
    with stdout_to_stderr():
        pair = (make_llama(), make_tokenizer())
    with Memory.open(path, model=pair, chunk_size=8) as mem:
        run_mcp(mem, transport, "127.0.0.1", int(port))


if __name__ == "__main__":
    main(*sys.argv[1:])
