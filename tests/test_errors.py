"""Every public error shares one root, and the CLI maps each to its documented exit code."""

from __future__ import annotations

import inspect

import pytest
import typer
from typer.testing import CliRunner

import msa_agent.errors as api_errors
import msa_agent.store.errors as store_errors
from msa_agent.cli.common import RUNTIME_EXIT, USAGE_EXIT, MsaGroup
from msa_agent.errors import InvalidInputError, MsaError


def public_errors() -> list[type[Exception]]:
    """Every exception class defined in the package's error modules."""
    out = []
    for module in (api_errors, store_errors):
        for _, cls in inspect.getmembers(module, inspect.isclass):
            mine = cls.__module__ == module.__name__
            if mine and issubclass(cls, Exception) and not issubclass(cls, Warning):
                out.append(cls)
    return out


def make(cls: type[Exception]) -> Exception:
    if "differing_keys" in inspect.signature(cls.__init__).parameters:
        return cls("boom", ["model"])
    return cls("boom")


def test_there_are_errors_to_walk() -> None:
    names = {c.__name__ for c in public_errors()}
    assert {"MsaError", "InvalidInputError", "StoreError", "StoreInputError",
            "FingerprintMismatchError", "UnknownMemoryError"} <= names


@pytest.mark.parametrize("cls", public_errors(), ids=lambda c: c.__name__)
def test_every_error_is_under_the_root(cls: type[Exception]) -> None:
    assert issubclass(cls, MsaError)


@pytest.mark.parametrize("cls", public_errors(), ids=lambda c: c.__name__)
def test_cli_exit_code_of_every_error(cls: type[Exception]) -> None:
    """Usage errors (InvalidInputError and its subclasses) exit 2, every other error 1; the
    message is one ``error:`` line."""
    app = typer.Typer(cls=MsaGroup)

    @app.command()
    def fail() -> None:
        raise make(cls)

    @app.command()
    def other() -> None:  # a second command keeps typer in group mode
        pass

    result = CliRunner().invoke(app, ["fail"])
    want = USAGE_EXIT if issubclass(cls, InvalidInputError) else RUNTIME_EXIT
    assert result.exit_code == want
    assert "error: boom" in result.output
