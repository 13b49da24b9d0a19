"""Exceptions raised by the store. Every failure of the underlying engines is wrapped in one."""

from __future__ import annotations

from msa_agent.errors import InvalidInputError, MsaError


class StoreError(MsaError):
    """Base class of every store error (under the package's one root, ``MsaError``)."""


class StoreInputError(StoreError, InvalidInputError):
    """An argument the store cannot take (bad filter, bad batch, wrong array shape...).

    Also an ``InvalidInputError`` (and so a ``ValueError``): the CLI maps it to exit code 2.
    """


class SpaceNotFoundError(StoreError):
    """No space exists at the given path."""


class SpaceExistsError(StoreError):
    """``Space.create`` was pointed at a path that already holds something."""


class SpaceLockedError(StoreError):
    """Another writer (process or open ``Space``) holds the space's lock file."""


class SpaceBusyError(StoreError):
    """A reader could not load a consistent view: the writer kept committing meanwhile."""


class SpaceReadOnlyError(StoreError):
    """A write was attempted on a space opened with ``read_only=True``."""


class FingerprintMismatchError(StoreError):
    """The space was made by a different model/config than the caller expects."""

    def __init__(self, message: str, differing_keys: list[str]) -> None:
        super().__init__(message)
        self.differing_keys = differing_keys


class StoreCorruptedError(StoreError):
    """The sqlite file or the zarr arrays are unreadable, inconsistent or too new."""


class InvalidQueryError(StoreInputError):
    """A query argument the store cannot take (a negative ``k``, a non-datetime ``since``...).

    Also a ``ValueError``, so callers that already catch bad input that way keep working.
    """


class FTS5UnavailableError(StoreError):
    """The Python ``sqlite3`` module was built without FTS5, which the lexical index needs."""


class StoreUnavailableError(StoreError):
    """The metadata database or the array store of a remote space cannot be reached
    (connection refused, bad credentials, unknown host or bucket)."""


class MissingDependencyError(StoreError):
    """A remote space needs an optional package that is not installed; the message names
    the extra to install (``pip install "msa-agent[remote]"``)."""
