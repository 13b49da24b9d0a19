"""The ``msa`` command line. The root only composes the app; each command lives in its module."""

from __future__ import annotations

import typer

from msa_agent.cli.demo import demo

app = typer.Typer(
    name="msa",
    help="msa-agent: lifelong memory for LLM agents, built on Memory Sparse Attention.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command()(demo)


@app.callback()
def _root() -> None:
    """Keep sub-commands explicit even while there is only one."""


def main() -> None:
    app()
