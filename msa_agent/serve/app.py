"""The HTTP API over one :class:`~msa_agent.memory.Memory`: ``create_app(memory_or_path)``.

One ``Memory`` (the space's one writer) serves every request. Endpoints are plain ``def``
functions, so FastAPI runs each in its worker threads and the event loop keeps accepting
requests while a query is encoded; ``Memory``'s locks make the concurrent calls safe (reads
share the space, each model forward holds the model lock). A batch of memories is one
encoder pass and one atomic write, as ``remember_many``.

Every error is JSON ``{"error": <exception name>, "detail": <message>}``; the library's
errors keep their meaning (bad input 422, unknown id 404, read-only 409, key 401/403).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from msa_agent.errors import InvalidInputError, MsaError, UnknownMemoryError
from msa_agent.memory import Memory
from msa_agent.runtime.stream import AnswerStream
from msa_agent.serve.auth import (
    OPEN,
    AuthConfig,
    AuthError,
    ForbiddenError,
    MissingKeyError,
    Principal,
    presented_key,
)
from msa_agent.serve.schemas import (
    AnswerRequest,
    DeletedResponse,
    ErrorBody,
    ExportRequest,
    ForgetRequest,
    Health,
    IdResponse,
    IdsResponse,
    ImportRequest,
    RecallRequest,
    RecallResponse,
    RememberBatch,
    RememberRequest,
    UpdateRequest,
)
from msa_agent.store import FingerprintMismatchError, SpaceLockedError, SpaceReadOnlyError
from msa_agent.types import Answer, MemoryEvent, MemoryRecord, SpaceStats

MAX_BODY_BYTES = 16 * 1024 * 1024  # a 4M-character text (the library's cap) fits as JSON
STATUS: list[tuple[type[Exception], int]] = [  # first match wins: subclasses first
    (MissingKeyError, 401), (ForbiddenError, 403), (UnknownMemoryError, 404),
    (InvalidInputError, 422), (SpaceReadOnlyError, 409), (SpaceLockedError, 409),
    (FingerprintMismatchError, 409), (MsaError, 400),
]


def create_app(memory_or_path: Memory | str | Path, *, auth: AuthConfig | None = None,
               model: str | None = None, max_body_bytes: int = MAX_BODY_BYTES,
               threads: int | None = None) -> FastAPI:
    """The FastAPI app serving ``memory_or_path``.

    Given a path, the space is opened (with ``model``) when the app starts and closed when it
    stops; a ``Memory`` you pass stays yours to close. ``auth``: API keys, or None for an open
    server (``msa_agent.serve.server`` refuses that off loopback). Bodies larger than
    ``max_body_bytes`` are refused with 413 before they are parsed. ``threads``: how many
    requests run at once (the rest wait in the event loop); None keeps anyio's 40. The model
    encodes one query at a time, so many more threads than cores add switching, not speed.
    """
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise InvalidInputError(f"threads must be a positive integer, got {threads!r}")
    app = FastAPI(title="msa-agent", version=_version(),
                  lifespan=_lifespan(memory_or_path, model, threads),
                  description="Lifelong memory for LLM agents over HTTP.")
    app.state.auth = auth
    if isinstance(memory_or_path, Memory):
        app.state.memory = memory_or_path
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    _add_error_handlers(app)
    app.include_router(router)
    if importlib.util.find_spec("msa_agent.serve.inspector") is not None:
        from msa_agent.serve.inspector import mount_inspector

        mount_inspector(app)
    return app


def _version() -> str:
    from msa_agent import __version__

    return __version__


def _lifespan(memory_or_path: Memory | str | Path, model: str | None,  # noqa: ANN202
              threads: int | None):
    """Open the space at startup when given a path (and close it at shutdown); size the
    worker threads (anyio's limiter belongs to the running loop, so it is set here)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if threads is not None:
            anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        if isinstance(memory_or_path, Memory):
            yield
            return
        app.state.memory = Memory.open(memory_or_path, model=model)
        try:
            yield
        finally:
            app.state.memory.close()

    return lifespan


# ---------------------------------------------------------------------------- plumbing
class BodyLimit:
    """Refuse a request body over ``limit`` bytes with 413, whether its length is declared
    or it arrives chunked (read up to the limit, then replayed to the app)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "DELETE"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                await self._refuse(scope, receive, send)
                return
        await self.app(scope, _replay(body, receive), send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"request body over {self.limit:,} bytes: split it into several requests"
        response = JSONResponse({"error": "PayloadTooLarge", "detail": detail}, 413)
        await response(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The whole body once, then the real channel (a streaming response listens on it for
    the client's disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(MsaError)
    async def library_error(request: Request, exc: MsaError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def bad_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{k: e[k] for k in ("loc", "msg", "type") if k in e} for e in exc.errors()]
        return JSONResponse({"error": "InvalidInputError", "detail": errors}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """FastAPI's own refusals (an unparsable body, an unknown route) in our shape."""
        name = "InvalidInputError" if exc.status_code == 400 else HTTPStatus(
            exc.status_code).phrase.replace(" ", "")
        return JSONResponse({"error": name, "detail": str(exc.detail)}, exc.status_code,
                            exc.headers)


def error_response(exc: Exception) -> JSONResponse:
    """The status of the library error ``exc`` and its JSON body."""
    status = next(code for cls, code in STATUS if isinstance(exc, cls))
    message = str(exc).strip() or type(exc).__name__
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": type(exc).__name__, "detail": message}, status, headers)


# The dependencies are coroutines on purpose: they do no I/O, and a plain ``def`` would cost
# each request two more hops through the worker threads (and two of their places).
async def get_memory(request: Request) -> Memory:
    return request.app.state.memory


async def get_principal(request: Request) -> Principal:
    """The caller's key as a :class:`Principal` (everyone is admin on a server without keys)."""
    auth: AuthConfig | None = request.app.state.auth
    return OPEN if auth is None else auth.principal(presented_key(request.headers))


async def maybe_principal(request: Request) -> Principal | None:
    try:
        return await get_principal(request)
    except AuthError:
        return None


Mem = Annotated[Memory, Depends(get_memory)]
Who = Annotated[Principal, Depends(get_principal)]
NsQuery = Annotated[str | None, Query(description="Default: the key's only namespace, "
                                                  "else the server's.")]


def ns_of(who: Principal, mem: Memory, asked: str | None) -> str:
    return who.namespace(asked, mem.config.namespace)


def _where(raw: str | None) -> dict[str, Any] | None:
    """``?where=`` is a JSON object of filters."""
    if raw is None or raw == "":
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        raise InvalidInputError(f"where must be a JSON object, got {raw[:80]!r}") from None
    if not isinstance(value, dict):
        raise InvalidInputError("where must be a JSON object of filters")
    return value


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (401, 403, 404, 409, 413, 422)}
router = APIRouter(prefix="/v1", responses=ERRORS)


# ---------------------------------------------------------------------------- endpoints
@router.get("/health", response_model=Health)
def health(mem: Mem, who: Annotated[Principal | None, Depends(maybe_principal)]) -> Health:
    """Liveness and the model; the memory count only for a valid key (or an open server)."""
    if who is None:
        return Health(model=mem.stats().model)
    stats = visible_stats(mem.stats(), who)
    return Health(model=stats.model, memories=stats.memories)


@router.get("/namespaces", response_model=list[str])
def namespaces(mem: Mem, who: Who) -> list[str]:
    return [ns for ns in mem.namespaces() if who.may_see(ns)]


@router.post("/memories", response_model=IdResponse)
def remember(body: RememberRequest, mem: Mem, who: Who) -> IdResponse:
    item = body.model_dump(exclude={"dedupe"})
    item["namespace"] = ns_of(who, mem, body.namespace)
    return IdResponse(id=mem.remember(**item, dedupe=body.dedupe))


@router.post("/memories/batch", response_model=IdsResponse)
def remember_many(body: RememberBatch, mem: Mem, who: Who) -> IdsResponse:
    """One encoder pass and one atomic write; one bad item stores nothing."""
    default = ns_of(who, mem, body.namespace)
    items = []
    for item in body.items:
        spec = {"text": item} if isinstance(item, str) else item.model_dump(exclude_none=True)
        spec["namespace"] = ns_of(who, mem, spec.get("namespace") or default)
        items.append(spec)
    return IdsResponse(ids=mem.remember_many(items, dedupe=body.dedupe))


@router.get("/memories", response_model=list[MemoryRecord])
def list_memories(mem: Mem, who: Who, namespace: NsQuery = None,
                  limit: Annotated[int, Query(ge=0, le=10_000)] = 100,
                  offset: Annotated[int, Query(ge=0)] = 0,
                  where: Annotated[str | None, Query(description="JSON object")] = None,
                  newest_first: bool = False,
                  include_expired: bool = False) -> list[MemoryRecord]:
    return mem.list(ns_of(who, mem, namespace), _where(where), limit=limit, offset=offset,
                    newest_first=newest_first, include_expired=include_expired)


@router.get("/memories/{id}", response_model=MemoryRecord)
def get(id: str, mem: Mem, who: Who, namespace: NsQuery = None) -> MemoryRecord:
    return mem.get(id, namespace=ns_of(who, mem, namespace))


@router.patch("/memories/{id}", response_model=IdResponse)
def update(id: str, body: UpdateRequest, mem: Mem, who: Who,
           namespace: NsQuery = None) -> IdResponse:
    ns = ns_of(who, mem, body.namespace or namespace)
    return IdResponse(id=mem.update(id, text=body.text, metadata=body.metadata, namespace=ns))


@router.get("/memories/{id}/history", response_model=list[MemoryEvent])
def history(id: str, mem: Mem, who: Who, namespace: NsQuery = None) -> list[MemoryEvent]:
    return mem.history(id, namespace=ns_of(who, mem, namespace))


@router.delete("/memories/{id}", response_model=DeletedResponse)
def forget_id(id: str, mem: Mem, who: Who, namespace: NsQuery = None) -> DeletedResponse:
    return DeletedResponse(deleted=mem.forget(id, namespace=ns_of(who, mem, namespace)))


@router.post("/forget", response_model=DeletedResponse)
def forget(body: ForgetRequest, mem: Mem, who: Who) -> DeletedResponse:
    ns = ns_of(who, mem, body.namespace)
    return DeletedResponse(deleted=mem.forget(where=body.where, namespace=ns, all=body.all))


@router.post("/recall", response_model=RecallResponse)
def recall(body: RecallRequest, mem: Mem, who: Who) -> RecallResponse:
    args = body.model_dump(exclude={"query", "namespace"})
    return RecallResponse(hits=mem.recall(body.query, namespace=ns_of(who, mem, body.namespace),
                                          **args))


@router.post("/answer", response_model=Answer,
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "The Answer, or (stream=true) server-sent events: "
                                             "data: {\"token\": ...} then event: done."}})
def answer(body: AnswerRequest, mem: Mem, who: Who) -> Answer | StreamingResponse:
    """Routing and validation run before the response starts, so their errors keep their
    status; an error while generating arrives as ``event: error``."""
    args = body.model_dump(exclude={"question", "namespace"})
    result = mem.answer(body.question, namespace=ns_of(who, mem, body.namespace), **args)
    if isinstance(result, Answer):
        return result
    return StreamingResponse(sse_events(result), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def sse_events(stream: AnswerStream) -> Iterator[str]:
    """``data: {"token": piece}`` per piece, then ``event: done`` with the Answer."""
    try:
        for piece in stream:
            yield f"data: {json.dumps({'token': piece}, ensure_ascii=False)}\n\n"
    except Exception as exc:  # noqa: BLE001 - the status line is sent: report in-band
        body = {"error": type(exc).__name__, "detail": str(exc)}
        yield f"event: error\ndata: {json.dumps(body)}\n\n"
        return
    assert stream.answer is not None
    yield f"event: done\ndata: {stream.answer.model_dump_json()}\n\n"


@router.get("/stats", response_model=SpaceStats)
def stats(mem: Mem, who: Who) -> SpaceStats:
    """A tenant key sees only its namespaces' counts (tokens, chunks, bytes are the space's)."""
    return visible_stats(mem.stats(), who)


def visible_stats(s: SpaceStats, who: Principal) -> SpaceStats:
    if who.admin:
        return s
    seen = {ns: n for ns, n in s.namespaces.items() if who.may_see(ns)}
    return s.model_copy(update={"namespaces": seen, "memories": sum(seen.values())})


@router.post("/export")
def export(body: ExportRequest, mem: Mem, who: Who) -> dict[str, Any]:
    """A bundle written on the server's disk (admin keys only)."""
    who.require_admin("export")
    report = mem.export(body.path, body.namespaces, all_namespaces=body.all_namespaces)
    return dataclasses.asdict(report)


@router.post("/import")
def import_(body: ImportRequest, mem: Mem, who: Who) -> dict[str, Any]:
    """A bundle read from the server's disk (admin keys only)."""
    who.require_admin("import")
    report = mem.import_(body.path, namespace=body.namespace,
                         keep_namespaces=body.keep_namespaces)
    return dataclasses.asdict(report)


@router.post("/compact")
def compact(mem: Mem, who: Who) -> dict[str, int]:
    who.require_admin("compact")
    return mem.compact()
