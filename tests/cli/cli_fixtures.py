"""Fixtures of the CLI tests: a tiny random model saved to disk, a runner, a space.

Test modules import them; a ``conftest.py`` here would shadow the root one that
``tests_helpers`` imports.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from msa_agent.cli import app
from msa_testing import save_tiny_model


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama and its tokenizer saved with ``save_pretrained`` (what ``--model`` takes)."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"))


class Msa:
    """Runs ``msa`` commands in-process against one space."""

    def __init__(self, space: Path) -> None:
        self.space, self.runner = space, CliRunner()

    def __call__(self, *args: str, input: str | None = None, code: int = 0):  # noqa: ANN204
        result = self.runner.invoke(app, [*args, "--path", str(self.space)], input=input)
        assert result.exit_code == code, (result.output, result.exception)
        return result

    def json(self, *args: str) -> object:
        return json.loads(self(*args, "--json").stdout)


@pytest.fixture()
def msa(tmp_path: Path, model_dir: Path) -> Msa:
    """An initialised space bound to the tiny model."""
    cli = Msa(tmp_path / "space")
    cli("init", "--model", str(model_dir))
    return cli


@pytest.fixture()
def docs(tmp_path: Path) -> Path:
    """A small folder: markdown, text in a sub-folder, a chat log, a hidden file, a binary."""
    d = tmp_path / "docs"
    (d / "sub").mkdir(parents=True)
    (d / "paris.md").write_text("Paris is the capital of France.")
    (d / "sub" / "tea.txt").write_text("Bob likes green tea.")
    (d / "chat.jsonl").write_text(
        '{"role": "user", "content": "my cat is called Ada"}\n'
        '{"role": "assistant", "content": "Nice name!"}\n')
    (d / ".hidden.md").write_text("should not be ingested")
    (d / "image.png").write_bytes(b"\x89PNG\x00\x00")
    return d

