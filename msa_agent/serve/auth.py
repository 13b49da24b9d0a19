"""API keys of the HTTP server: which key may touch which namespaces.

Light on purpose (no FastAPI import): the client and the CLI import the errors from here.

A keys file (JSON or TOML) maps each key to the namespaces it may read and write; ``"*"``
makes an admin key (every namespace, plus export, import and compact)::

    {"keys": {"sk-admin-1": ["*"], "sk-alice": ["alice"], "sk-team": ["a", "b"]}}

The same mapping may come from the ``MSA_API_KEYS`` environment variable (JSON). A request
gives its key as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msa_agent.errors import InvalidInputError, MsaError

ADMIN = "*"
KEYS_ENV = "MSA_API_KEYS"


class AuthError(MsaError):
    """A request the server refuses for its key (base of the two below)."""


class MissingKeyError(AuthError):
    """No key, or a key the server does not know (HTTP 401)."""


class ForbiddenError(AuthError):
    """A known key asked for a namespace (or an admin action) it is not given (HTTP 403)."""


@dataclass(frozen=True)
class Principal:
    """Who a request is: the namespaces its key may use (``None``: every one, an admin)."""

    namespaces: frozenset[str] | None

    @property
    def admin(self) -> bool:
        return self.namespaces is None

    def namespace(self, asked: str | None, default: str) -> str:
        """The namespace a request acts in: the one asked, else the key's only namespace (a
        tenant need not repeat it), else the server's default; refused if not the key's."""
        ns = asked or (next(iter(self.namespaces)) if self.namespaces is not None
                       and len(self.namespaces) == 1 else default)
        if self.namespaces is not None and ns not in self.namespaces:
            raise ForbiddenError(f"this API key may not use namespace {ns!r}")
        return ns

    def may_see(self, namespace: str) -> bool:
        return self.namespaces is None or namespace in self.namespaces

    def require_admin(self, action: str) -> None:
        if not self.admin:
            raise ForbiddenError(f"{action} needs an admin API key (one given '*')")


OPEN = Principal(None)  # every request, when the server runs without keys


@dataclass(frozen=True)
class AuthConfig:
    """The server's keys: key -> the namespaces it may use (``"*"`` for all)."""

    keys: Mapping[str, frozenset[str]]

    def __post_init__(self) -> None:
        if not self.keys:
            raise InvalidInputError("an AuthConfig needs at least one API key")
        for key, namespaces in self.keys.items():
            if not isinstance(key, str) or len(key) < 8 or key != key.strip():
                raise InvalidInputError("API keys must be strings of at least 8 characters "
                                        "without surrounding spaces")
            if not namespaces:
                raise InvalidInputError(f"API key {key[:4]}...: no namespaces given "
                                        "(use [\"*\"] for an admin key)")

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> AuthConfig:
        """``{"keys": {KEY: [NS, ...]}}`` or the inner mapping itself; a single NS string is
        taken as a list of one."""
        inner = data.get("keys", data)
        if not isinstance(inner, Mapping):
            raise InvalidInputError("API keys: expected a mapping of key -> namespaces")
        keys: dict[str, frozenset[str]] = {}
        for key, namespaces in inner.items():
            listed = [namespaces] if isinstance(namespaces, str) else namespaces
            if not isinstance(listed, list) or not all(isinstance(n, str) for n in listed):
                raise InvalidInputError(f"API key {str(key)[:4]}...: namespaces must be a "
                                        "list of strings")
            keys[str(key)] = frozenset(listed)
        return cls(keys)

    @classmethod
    def from_file(cls, path: str | Path) -> AuthConfig:
        """A JSON (``.json``) or TOML (any other suffix) keys file."""
        p = Path(path).expanduser()
        try:
            raw = p.read_text(encoding="utf-8")
            data = json.loads(raw) if p.suffix == ".json" else _toml(raw)
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"cannot read the API keys file {p}: {exc}") from None
        return cls.from_mapping(data)

    @classmethod
    def from_env(cls) -> AuthConfig | None:
        """From ``$MSA_API_KEYS`` (JSON), or None when it is unset or empty."""
        raw = os.environ.get(KEYS_ENV, "").strip()
        if not raw:
            return None
        try:
            return cls.from_mapping(json.loads(raw))
        except ValueError as exc:
            raise InvalidInputError(f"${KEYS_ENV} is not a JSON mapping of keys: {exc}") from None

    @classmethod
    def admin_key(cls, key: str) -> AuthConfig:
        """One key that may do everything."""
        return cls({key: frozenset({ADMIN})})

    def principal(self, key: str | None) -> Principal:
        """The principal of a presented key; :class:`MissingKeyError` for none or unknown.

        Every stored key is compared in constant time, so timing says nothing about keys."""
        if not key:
            raise MissingKeyError("an API key is required: send 'Authorization: Bearer KEY' "
                                  "or 'X-API-Key: KEY'")
        found: frozenset[str] | None = None
        for stored, namespaces in self.keys.items():
            if hmac.compare_digest(stored.encode(), key.encode()):
                found = namespaces
        if found is None:
            raise MissingKeyError("unknown API key")
        return Principal(None if ADMIN in found else found)


def _toml(text: str) -> dict[str, Any]:
    """TOML through the standard library (Python 3.11+); on 3.10, a JSON file is needed."""
    try:
        import tomllib
    except ImportError:  # pragma: no cover - Python 3.10
        raise ValueError("TOML needs Python 3.11 or later: write the keys file as .json") \
            from None
    return tomllib.loads(text)


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key of a request: ``Authorization: Bearer KEY``, else ``X-API-Key``."""
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return headers.get("x-api-key") or None
