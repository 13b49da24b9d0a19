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


def test_answer_count_defaults_by_mode() -> None:
    from msa_agent.cli.bench import answer_count

    defaults = {"quick": 6, "full": 30}
    assert answer_count(None, None, "quick", defaults) == 0  # quick: off unless asked
    assert answer_count(None, None, "full", defaults) == 30
    assert answer_count(True, None, "quick", defaults) == 6
    assert answer_count(True, 3, "quick", defaults) == 3
    assert answer_count(False, 3, "full", defaults) == 0
    with pytest.raises(typer.BadParameter):
        answer_count(True, 0, "quick", defaults)


def test_bench_help_lists_the_answer_stage() -> None:
    result = CliRunner().invoke(app, ["bench", "--help"])
    assert "--answers" in result.output and "--answer-questions" in result.output
