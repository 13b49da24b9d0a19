"""``MemoryClient``: a running ``msa serve`` from Python, with the library's types and errors.

Light on purpose (httpx and pydantic, no torch): the CLI uses it when ``$MSA_SERVER_URL`` is
set, so ``msa recall`` answers in the time of one HTTP request instead of a model load.

>>> with MemoryClient("http://127.0.0.1:8765", api_key="sk-...") as mem:  # doctest: +SKIP
...     mem.remember("The cat is called Ada.")
...     mem.recall("What is the cat's name?", k=3)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

import httpx

from msa_agent.errors import InvalidInputError, MsaError, UnknownMemoryError
from msa_agent.serve.auth import ForbiddenError, MissingKeyError
from msa_agent.types import Answer, MemoryEvent, MemoryRecord, RecallHit, SpaceStats

URL_ENV, KEY_ENV = "MSA_SERVER_URL", "MSA_API_KEY"
BY_STATUS: dict[int, type[MsaError]] = {401: MissingKeyError, 403: ForbiddenError,
                                        404: UnknownMemoryError, 422: InvalidInputError}


class ServerError(MsaError):
    """The server refused a request for another reason, or could not be reached."""


class MemoryClient:
    """The HTTP API as methods named like :class:`~msa_agent.memory.Memory`'s.

    ``namespace``: the default of every call (None: the key's own, else the server's).
    Errors come back as the library's: :class:`UnknownMemoryError` for 404,
    :class:`InvalidInputError` for 422, ``MissingKeyError``/``ForbiddenError`` for 401/403.
    """

    def __init__(self, url: str, api_key: str | None = None, *, namespace: str | None = None,
                 timeout: float = 60.0, transport: httpx.BaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.url, self.namespace = url.rstrip("/"), namespace
        self._http = httpx.Client(base_url=f"{self.url}/v1", headers=headers, timeout=timeout,
                                  transport=transport)

    @classmethod
    def from_env(cls, namespace: str | None = None) -> MemoryClient | None:
        """A client of ``$MSA_SERVER_URL`` (key ``$MSA_API_KEY``), or None when it is unset."""
        url = os.environ.get(URL_ENV, "").strip()
        if not url:
            return None
        return cls(url, os.environ.get(KEY_ENV) or None, namespace=namespace)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> MemoryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing
    def _call(self, method: str, path: str, body: Any = None,
              params: Mapping[str, Any] | None = None) -> Any:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            r = self._http.request(method, path, json=body, params=query)
        except httpx.TransportError as exc:
            raise ServerError(f"no msa server answers at {self.url} ({exc}); start one with "
                              f"`msa serve`, or unset ${URL_ENV}") from None
        if r.status_code >= 400:
            raise _error(r)
        return r.json()

    def _ns(self, namespace: str | None) -> str | None:
        return namespace if namespace is not None else self.namespace

    # ------------------------------------------------------------------ API
    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health")

    def namespaces(self) -> list[str]:
        return self._call("GET", "/namespaces")

    def remember(self, text: str, kind: str = "document",
                 metadata: Mapping[str, Any] | None = None, *, namespace: str | None = None,
                 dedupe: bool = False, **fields: Any) -> str:
        """``fields``: session_id, user_id, agent_id, at, key, expires_at, ttl (seconds or a
        ``timedelta``), as :meth:`Memory.remember`."""
        if isinstance(fields.get("ttl"), timedelta):
            fields["ttl"] = fields["ttl"].total_seconds()
        body = _jsonable({"text": text, "kind": kind, "metadata": metadata,
                          "namespace": self._ns(namespace), "dedupe": dedupe, **fields})
        return self._call("POST", "/memories", body)["id"]

    def remember_many(self, items: Iterable[str | Mapping[str, Any]], *,
                      namespace: str | None = None, dedupe: bool = False) -> list[str]:
        body = {"items": [i if isinstance(i, str) else _jsonable(i) for i in items],
                "namespace": self._ns(namespace), "dedupe": dedupe}
        return self._call("POST", "/memories/batch", body)["ids"]

    def recall(self, query: str, k: int | None = None, where: Mapping[str, Any] | None = None,
               *, namespace: str | None = None, **options: Any) -> list[RecallHit]:
        """``options``: explain, hops, routing, since, until, offset, min_score, group."""
        body = _jsonable({"query": query, "k": k, "where": where,
                          "namespace": self._ns(namespace), **options})
        return [RecallHit.model_validate(h) for h in self._call("POST", "/recall", body)["hits"]]

    def answer(self, question: str, k: int | None = None, *, namespace: str | None = None,
               **options: Any) -> Answer:
        body = {"question": question, "k": k, "namespace": self._ns(namespace), **options}
        return Answer.model_validate(self._call("POST", "/answer", _jsonable(body)))

    def answer_stream(self, question: str, k: int | None = None, *,
                      namespace: str | None = None, **options: Any) -> Iterator[str | Answer]:
        """The answer's text pieces as the server sends them, then the :class:`Answer`."""
        body = _jsonable({"question": question, "k": k, "namespace": self._ns(namespace),
                          **options, "stream": True})
        with self._http.stream("POST", "/answer", json=body) as r:
            if r.status_code >= 400:
                r.read()
                raise _error(r)
            yield from _sse(r.iter_lines())

    def get(self, id: str, *, namespace: str | None = None) -> MemoryRecord:
        data = self._call("GET", f"/memories/{id}", params={"namespace": self._ns(namespace)})
        return MemoryRecord.model_validate(data)

    def list(self, namespace: str | None = None, where: Mapping[str, Any] | None = None,
             limit: int = 100, offset: int = 0, newest_first: bool = False,
             include_expired: bool = False) -> list[MemoryRecord]:
        params = {"namespace": self._ns(namespace), "limit": limit, "offset": offset,
                  "newest_first": newest_first, "include_expired": include_expired,
                  "where": json.dumps(where) if where else None}
        return [MemoryRecord.model_validate(m) for m in self._call("GET", "/memories",
                                                                   params=params)]

    def update(self, id: str, *, text: str | None = None,
               metadata: Mapping[str, Any] | None = None, namespace: str | None = None) -> str:
        body = {"text": text, "metadata": metadata, "namespace": self._ns(namespace)}
        return self._call("PATCH", f"/memories/{id}", _jsonable(body))["id"]

    def history(self, id: str, *, namespace: str | None = None) -> list[MemoryEvent]:
        data = self._call("GET", f"/memories/{id}/history",
                          params={"namespace": self._ns(namespace)})
        return [MemoryEvent.model_validate(e) for e in data]

    def forget(self, id: str | None = None, *, where: Mapping[str, Any] | None = None,
               namespace: str | None = None, all: bool = False) -> int:
        if id is not None:
            return self._call("DELETE", f"/memories/{id}",
                              params={"namespace": self._ns(namespace)})["deleted"]
        body = {"where": where, "namespace": self._ns(namespace), "all": all}
        return self._call("POST", "/forget", body)["deleted"]

    def stats(self) -> SpaceStats:
        return SpaceStats.model_validate(self._call("GET", "/stats"))

    def compact(self) -> dict[str, int]:
        """As :meth:`Memory.compact` (an admin key, where the server has keys)."""
        return self._call("POST", "/compact")


def _jsonable(body: Mapping[str, Any]) -> dict[str, Any]:
    """Drop unset fields (the server's defaults apply); datetimes as ISO strings."""
    return {k: v.isoformat() if isinstance(v, datetime) else v
            for k, v in body.items() if v is not None}


def _error(r: httpx.Response) -> MsaError:
    """The library error of an error response (``{"error", "detail"}``)."""
    try:
        detail = r.json().get("detail", r.text)
    except ValueError:
        detail = r.text
    cls = BY_STATUS.get(r.status_code, ServerError)
    return cls(f"{detail}" if cls is not ServerError else f"HTTP {r.status_code}: {detail}")


def _sse(lines: Iterable[str]) -> Iterator[str | Answer]:
    """Parse the answer stream: token events, then ``done`` (or ``error``)."""
    event = "message"
    for line in lines:
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data = json.loads(line[5:])
            if event == "done":
                yield Answer.model_validate(data)
            elif event == "error":
                raise ServerError(f"{data.get('error')}: {data.get('detail')}")
            else:
                yield data["token"]
            event = "message"
