"""Exceptions raised by the public API. Each carries a one-line, actionable message."""

from __future__ import annotations


class MsaError(Exception):
    """Base class for every error msa-agent raises on purpose."""


class InvalidInputError(MsaError, ValueError):
    """The caller passed something the API cannot take (empty text, bytes, k < 1, ...)."""


class ModelLoadError(MsaError):
    """The requested model could not be found or loaded."""


class UnknownMemoryError(MsaError, KeyError):
    """No memory with the given id exists in this space."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else "unknown memory"


class RouterMismatchError(MsaError):
    """A router file does not belong to the loaded model."""


class RoutingQualityWarning(UserWarning):
    """Routing runs on the model's own Q/K, measured at chance level across documents."""
