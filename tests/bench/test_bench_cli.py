"""``msa bench`` is registered and parses its options."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from msa_agent.cli import app
from msa_agent.cli.bench import parse_variants


def test_bench_help() -> None:
    result = CliRunner().invoke(app, ["bench", "--help"])
    assert result.exit_code == 0
    assert "--quick" in result.output and "--msa-variant" in result.output


def test_parse_variants() -> None:
    assert parse_variants(None) is None
    assert parse_variants(['auto={"hops": "auto"}']) == {"msa-agent auto": {"hops": "auto"}}
    with pytest.raises(typer.BadParameter):
        parse_variants(["no-json"])
