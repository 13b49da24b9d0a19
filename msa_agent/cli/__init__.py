"""The ``msa`` command line. The root only composes the app; each command lives in its module."""

from __future__ import annotations

import typer

from msa_agent.cli.ask import ask
from msa_agent.cli.bench import bench
from msa_agent.cli.common import MsaGroup, root
from msa_agent.cli.demo import demo
from msa_agent.cli.doctor import doctor
from msa_agent.cli.ingest import ingest
from msa_agent.cli.memories import forget, ls, recall, show
from msa_agent.cli.serve import serve
from msa_agent.cli.space import compact, init, stats
from msa_agent.cli.train import train_router
from msa_agent.cli.transfer import export, import_

app = typer.Typer(
    name="msa",
    cls=MsaGroup,
    help="msa-agent: lifelong memory for LLM agents, built on Memory Sparse Attention.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)
app.callback()(root)
app.command()(init)
app.command()(ingest)
app.command()(recall)
app.command()(ask)
app.command()(ls)
app.command()(show)
app.command()(forget)
app.command()(compact)
app.command()(stats)
app.command()(export)
app.command(name="import")(import_)
app.command()(doctor)
app.command()(demo)
app.command(name="train-router")(train_router)
app.command()(bench)
app.command()(serve)


def main() -> None:
    """Entry point of the ``msa`` script."""
    app()
