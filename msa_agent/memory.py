"""The ``Memory`` facade: wires config, model, encoder, router, routing index and store.

It holds no algorithm: encoding lives in ``msa_agent.model``, scoring in ``msa_agent.runtime``,
persistence in ``msa_agent.store``.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from msa_agent import bundle
from msa_agent.bundle import ExportReport, ImportReport
from msa_agent.config import MemoryConfig
from msa_agent.errors import InvalidInputError, UnknownMemoryError
from msa_agent.model.loader import LoadedModel, load_model, wrap_model
from msa_agent.model.text import check_text, query_ids, split_text
from msa_agent.runtime.answer import Reader, pick_read
from msa_agent.runtime.engine import Engine
from msa_agent.runtime.generative import SelectPerLayer
from msa_agent.runtime.interleave import Hit, Hops, interleave, max_rounds
from msa_agent.runtime.stream import AnswerStream, GenerativeSource, ReadOnce
from msa_agent.store import NewMemory, Space, StoredMemory
from msa_agent.types import Answer, Explanation, MemoryRecord, RecallHit, SpaceStats


def _record(m: StoredMemory) -> MemoryRecord:
    return MemoryRecord(
        id=m.id, namespace=m.namespace, kind=m.kind, text=m.text, metadata=m.metadata,
        session_id=m.session_id, user_id=m.user_id, agent_id=m.agent_id, source_id=m.source_id,
        part=m.part, created_at=m.created_at, n_tokens=m.n_tokens, n_chunks=m.n_chunks,
    )


class Memory:
    """Lifelong memory of an agent, persisted in a folder.

    >>> with Memory.open("./mem") as mem:  # doctest: +SKIP
    ...     mid = mem.remember("The cat is called Ada.", kind="session")
    ...     mem.recall("What is the cat's name?", k=3)
    """

    def __init__(self, engine: Engine, space: Space, config: MemoryConfig) -> None:
        self._engine, self._space, self.config = engine, space, config
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def open(
        cls,
        path: str | Path,
        model: str | LoadedModel | tuple[Any, Any] | None = None,
        namespace: str = "default",
        *,
        config: MemoryConfig | None = None,
        **overrides: Any,
    ) -> Memory:
        """Open (or create) the memory space at ``path``.

        ``model``: an HF id or local path, a ``(model, tokenizer)`` pair you already hold, or
        None for the space's own model (the embedded SmolLM2-135M-Instruct for a new space).
        ``overrides`` are :class:`MemoryConfig` fields. A space is bound to one model: opening
        it with another is refused (``FingerprintMismatchError``).
        """
        base = config or MemoryConfig()
        explicit = set(base.model_fields_set) | set(overrides)
        if namespace != "default":
            explicit.add("namespace")
        fields = {**base.model_dump(), **overrides, "namespace": namespace}
        cfg = MemoryConfig.model_validate(fields)
        path = Path(path)
        lm, cfg = _resolve_model(path, model, cfg, explicit)
        engine = Engine.build(lm, cfg)
        space = Space.open_or_create(path, engine.fingerprint(), engine.array_specs())
        try:
            engine.attach(space)
            space.set_setting("config", _space_config(cfg, lm))
        except BaseException:  # a failed open must not keep the space locked
            space.close()
            raise
        return cls(engine, space, cfg)

    def close(self) -> None:
        """Release the space (its lock and files). Safe to call twice."""
        with self._lock:
            self._space.close()

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writes
    def remember(
        self,
        text: str,
        kind: str = "document",
        metadata: Mapping[str, Any] | None = None,
        *,
        session_id: str | None = None,
        user_id: str | None = None,
        agent_id: str | None = None,
        namespace: str | None = None,
    ) -> str:
        """Encode and store one memory; returns its id.

        A text longer than ``max_doc_tokens`` is split into several documents; the id returned
        is the first part's, and every part's ``source_id`` is that id (``forget`` of it
        removes all parts).
        """
        item = dict(text=text, kind=kind, metadata=metadata, session_id=session_id,
                    user_id=user_id, agent_id=agent_id, namespace=namespace)
        return self.remember_many([item])[0]

    def remember_many(self, items: Iterable[str | Mapping[str, Any]]) -> list[str]:
        """Store many memories in one batched encoder pass and one atomic write.

        Each item is a text or a dict of :meth:`remember`'s arguments. Returns one id per item.
        Input is validated first: one bad item rejects the whole call and stores nothing.
        """
        plans = [self._plan(i, item) for i, item in enumerate(items)]
        if not plans:
            return []
        pieces = [p for plan in plans for p in plan]
        with self._lock:
            self._engine.store(self._space, pieces)
        return [plan[0].memory.source_id or "" for plan in plans]

    def _plan(self, index: int, item: str | Mapping[str, Any]) -> list[_Pending]:
        if isinstance(item, Mapping):
            spec = dict(item)
        else:
            spec = {"text": item}
        unknown = set(spec) - {"text", "kind", "metadata", "session_id", "user_id", "agent_id",
                               "namespace"}
        if unknown:
            raise InvalidInputError(f"item {index}: unknown fields {sorted(unknown)}")
        text = check_text(spec.get("text"), f"item {index} text")
        kind = spec.get("kind") or "document"
        if not isinstance(kind, str):
            raise InvalidInputError(f"item {index}: kind must be a string")
        pieces = split_text(self._engine.tokenizer, text, self.config.max_doc_tokens)
        first = uuid.uuid4().hex
        return [
            _Pending(
                ids=p.ids,
                memory=NewMemory(
                    text=p.text, namespace=spec.get("namespace") or self.config.namespace,
                    kind=kind, metadata=dict(spec.get("metadata") or {}),
                    session_id=spec.get("session_id"), user_id=spec.get("user_id"),
                    agent_id=spec.get("agent_id"), source_id=first, part=p.part,
                    n_tokens=len(p.ids),
                ),
                id=first if p.part == 0 else uuid.uuid4().hex,
            )
            for p in pieces
        ]

    def forget(
        self, id: str | None = None, *, where: Mapping[str, Any] | None = None,
        namespace: str | None = None,
    ) -> int:
        """Delete a memory (and the other parts of its source), or every match of ``where``.

        Deletion is real: rows are removed and the arrays' rows are overwritten. Returns the
        number of documents deleted. An unknown id raises :class:`UnknownMemoryError`.
        """
        if (id is None) == (where is None):
            raise InvalidInputError("forget() takes exactly one of an id or where=")
        with self._lock:
            if id is not None:
                target = self._space.get(id)
                if target is None:
                    raise UnknownMemoryError(f"no memory with id {id!r}")
                ids = {id} | {m.id for m in self._space.find(None, {"source_id": id})}
            else:
                ids = {m.id for m in self._space.find(namespace or self.config.namespace, where)}
            n = self._space.delete(sorted(ids))
            self._engine.forget(sorted(ids))
            return n

    # ------------------------------------------------------------------ reads
    def recall(
        self,
        query: str,
        k: int | None = None,
        where: Mapping[str, Any] | None = None,
        *,
        namespace: str | None = None,
        explain: bool = False,
        hops: Hops = 1,
    ) -> list[RecallHit]:
        """The ``k`` memories the router scores highest for ``query``, best first.

        Candidates are restricted to ``namespace`` (default: the space's) and ``where``
        (equality on kind/session_id/user_id/agent_id/source_id or metadata keys) *before*
        top-k, so a memory outside them is never returned. ``hops`` > 1 or ``"auto"`` runs
        routing-driven rounds (memory interleave): each later round routes with the question
        plus the best new memory's text; hits record their ``round`` and ``via``.
        """
        k, _ = self._checked(query, "query", k, hops)
        ns = namespace or self.config.namespace
        with self._lock:
            allowed = [m.id for m in self._space.find(ns, where)] if where else None
            hits = interleave(self._router_for(k, ns, allowed), self._text_of, query, k, hops,
                              min_score=self.config.hop_min_score)
            doc_ids = self._engine.index.doc_ids
            found = {m.id: m for m in self._space.get_many([doc_ids[h.doc] for h in hits])}
            return [self._hit(found[doc_ids[h.doc]], h, explain) for h in hits
                    if doc_ids[h.doc] in found]

    def _checked(self, text: str, what: str, k: int | None, hops: Hops) -> tuple[int, int]:
        """Validated ``(k, round limit)`` for a recall or an answer; clear errors otherwise."""
        check_text(text, what)
        k = self.config.top_k if k is None else k
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise InvalidInputError(f"k must be a positive integer, got {k!r}")
        try:
            return k, max_rounds(hops)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None

    def _router_for(self, k: int, ns: str, allowed: list[str] | None):  # noqa: ANN202
        def route(text: str, exclude: set[int]) -> Any:
            ids = query_ids(self._engine.tokenizer, text, self.config.max_doc_tokens)
            return self._engine.route(ids, k, ns, allowed, exclude)

        return route

    def _text_of(self, doc: int) -> str:
        m = self._space.get(self._engine.index.doc_ids[doc])
        return m.text if m is not None else ""

    def _hit(self, m: StoredMemory, h: Hit, explain: bool) -> RecallHit:
        exp = None
        if explain:
            exp = Explanation(
                layer_scores=dict(zip(self._engine.layers, h.layer_scores)),
                best_chunk=h.best_chunk,
                best_chunk_text=self._engine.chunk_text(m.text, h.best_chunk),
                combine=self.config.layer_combine,
            )
        via = [self._engine.index.doc_ids[d] for d in h.via]
        return RecallHit(id=m.id, text=m.text, score=h.score, kind=m.kind,
                         namespace=m.namespace, metadata=m.metadata, created_at=m.created_at,
                         source_id=m.source_id, round=h.round, via=via, explanation=exp)

    def answer(
        self,
        question: str,
        k: int | None = None,
        where: Mapping[str, Any] | None = None,
        *,
        namespace: str | None = None,
        hops: Hops = 1,
        read: str = "auto",
        max_new_tokens: int = 64,
        stream: bool = False,
    ) -> Answer | AnswerStream:
        """Answer ``question`` from memory: route (``hops`` rounds), read, generate greedily.

        ``read``: ``"text"`` re-reads the memories' text, ``"full"`` attends to their stored
        per-token K/V (space made with ``keep_full_kv=True``), ``"pooled"`` to their pooled K/V
        (MSA-trained models; each MSA layer reads its own top-k); ``"auto"`` picks ``pooled``
        for an MSA checkpoint, else ``text``, and the returned :class:`Answer` says which.
        With an MSA checkpoint, ``pooled`` reading and ``hops`` other than 1 run the paper's
        generative interleave: the model asks for documents by id (``<doc>2</doc>``), their
        text is appended and routing runs again (``msa_agent.runtime.generative``).
        With ``stream=True`` an iterable of text pieces is returned; its ``.answer`` is set
        once it is exhausted.
        """
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise InvalidInputError(f"max_new_tokens must be >= 1, got {max_new_tokens!r}")
        try:
            mode = pick_read(read, self.config.keep_full_kv, self._engine.lm.msa is not None)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
        if mode == "pooled" and self._engine.lm.msa is not None and hops != 1:
            source = self._generative(question, k, where, namespace, hops, max_new_tokens)
            result = AnswerStream(self._engine, source, {})
            return result if stream else result.collect()
        started = time.perf_counter()
        hits = self.recall(question, k, where, namespace=namespace, hops=hops)
        routed = time.perf_counter()
        with self._lock:
            memories = self._space.get_many([h.id for h in hits])
            per_layer = None
            if mode == "pooled" and hits:
                select = self._select_per_layer(k, namespace, where)
                per_layer = select(question)
            try:
                reader = Reader(self._engine, self._space, question, memories, mode, per_layer)
            except ValueError as exc:
                raise InvalidInputError(str(exc)) from None
        timings = {"route_ms": 1000 * (routed - started),
                   "read_ms": 1000 * (time.perf_counter() - routed)}
        source = ReadOnce(self._engine, reader, hits, max_new_tokens, per_layer)
        result = AnswerStream(self._engine, source, timings)
        return result if stream else result.collect()

    def _generative(self, question: str, k: int | None, where: Mapping[str, Any] | None,
                    namespace: str | None, hops: Hops, max_new_tokens: int) -> GenerativeSource:
        """The paper's interleave for an MSA checkpoint: the model asks for documents by id."""
        k, rounds = self._checked(question, "question", k, hops)
        if where:
            with self._lock:
                self._space.find(namespace or self.config.namespace, where, limit=1)  # validates

        def to_hit(m: StoredMemory, rnd: int, score: float) -> RecallHit:
            return self._hit(m, Hit(0, score, rnd), explain=False)

        select = self._select_per_layer(k, namespace, where)
        return GenerativeSource(self._engine, self._space, question, select, rounds,
                                max_new_tokens, to_hit, self._lock)

    def _select_per_layer(self, k: int | None, namespace: str | None,
                          where: Mapping[str, Any] | None) -> SelectPerLayer:
        """(context text) -> each MSA layer's own top-k memories (pooled reading)."""
        k = self.config.top_k if k is None else k
        ns = namespace or self.config.namespace

        def select(text: str) -> dict[int, list[StoredMemory]]:
            ids = query_ids(self._engine.tokenizer, text, self.config.max_doc_tokens)
            with self._lock:
                doc_ids = self._engine.index.doc_ids
                if not doc_ids:
                    return {}
                allowed = [m.id for m in self._space.find(ns, where)] if where else None
                chosen = self._engine.route_per_layer(ids, k, ns, allowed)
                wanted = {doc_ids[d] for sel in chosen.values() for d in sel}
                found = {m.id: m for m in self._space.get_many(list(wanted))}
            return {layer: [found[doc_ids[d]] for d in sel if doc_ids[d] in found]
                    for layer, sel in chosen.items()}

        return select

    def reencode_routing(self, router_path: str | Path | None = None) -> int:
        """Recompute the routing keys of every stored memory; their K/V are not touched.

        With ``router_path``, switch to that router first (it must belong to this space's
        model). ``open`` already re-encodes when a space's keys came from another router; call
        this to switch routers on an open memory, or to repair keys. Shows progress; returns
        the number of memories re-encoded.
        """
        from msa_agent.model.loader import model_fingerprint
        from msa_agent.model.router import Router

        with self._lock:
            if router_path is None:
                return self._engine.refresh_routing(self._space)
            lm = self._engine.lm
            router = Router.load(router_path, model_fingerprint(lm)).to(lm.device)
            n = self._engine.refresh_routing(self._space, router)
            self.config.router_path, self.config.routing = str(router_path), "learned"
            self._space.set_setting("config", _space_config(self.config, lm))
            return n

    def get(self, id: str) -> MemoryRecord:
        """The memory with this id; :class:`UnknownMemoryError` if there is none."""
        with self._lock:
            m = self._space.get(id)
        if m is None:
            raise UnknownMemoryError(f"no memory with id {id!r}")
        return _record(m)

    def list(
        self, namespace: str | None = None, where: Mapping[str, Any] | None = None,
        limit: int | None = 100, offset: int = 0, newest_first: bool = False,
    ) -> list[MemoryRecord]:
        """Memories of a namespace (default: the space's), oldest first unless asked."""
        order = "-created_at" if newest_first else "created_at"
        with self._lock:
            rows = self._space.find(namespace or self.config.namespace, where, limit=limit,
                                    offset=offset, order=order)
        return [_record(m) for m in rows]

    def namespaces(self) -> list[str]:
        with self._lock:
            return self._space.namespaces()

    def stats(self) -> SpaceStats:
        """Counts and on-disk size of the space."""
        with self._lock:
            s = self._space.stats()
        return SpaceStats(
            path=str(self._space.path), model=self._engine.lm.name,
            routing=self._engine.routing_mode, router_id=self._engine.router_id,
            memories=s["memories"], namespaces=s["namespaces"], tokens=s["tokens"],
            chunks=s["chunks"], bytes_on_disk=s["bytes_on_disk"],
        )

    # ------------------------------------------------------------------ export / import
    def export(self, path: str | Path, namespaces: Sequence[str] | None = None,
               progress: Callable[[int], None] | None = None) -> ExportReport:
        """Write a portable bundle of this space (see :mod:`msa_agent.bundle`)."""
        with self._lock:
            return bundle.export_space(self._space, self._engine.router_id, path, namespaces,
                                       progress)

    def import_(self, path: str | Path,
                progress: Callable[[int], None] | None = None) -> ImportReport:
        """Add a bundle's memories, keeping their ids; refused for a bundle of another model."""
        with self._lock:
            return bundle.import_bundle(self._space, self._engine, path, progress)

    @property
    def path(self) -> Path:
        return self._space.path


class _Pending:
    """A document about to be stored: its token ids, its row, and its pre-assigned id."""

    __slots__ = ("ids", "memory", "id")

    def __init__(self, ids: list[int], memory: NewMemory, id: str) -> None:
        self.ids, self.memory, self.id = ids, memory, id


def _space_config(cfg: MemoryConfig, lm: LoadedModel) -> dict[str, Any]:
    return {"model": lm.name, "msa_layers": cfg.msa_layers, "chunk_size": cfg.chunk_size,
            "store_dtype": cfg.store_dtype, "keep_full_kv": cfg.keep_full_kv,
            "full_kv_layers": cfg.full_kv_layers,
            "max_doc_tokens": cfg.max_doc_tokens,
            "routing": cfg.routing, "router_path": cfg.router_path}


def _resolve_model(
    path: Path, model: Any, cfg: MemoryConfig, explicit: set[str]
) -> tuple[LoadedModel, MemoryConfig]:
    """Load the model; an existing space supplies its own model and layout unless overridden."""
    stored: dict[str, Any] = {}
    if (path / "meta.sqlite").exists():
        with Space.open(path) as existing:
            stored = existing.get_setting("config") or {}
    if "router_path" in explicit:  # naming a router overrides the space's stored routing
        explicit = explicit | {"routing"}
    keep = {k: v for k, v in stored.items() if k != "model" and k not in explicit}
    cfg = cfg.model_copy(update=keep)
    if isinstance(model, LoadedModel):
        return model, cfg
    if isinstance(model, Sequence) and not isinstance(model, str):
        return wrap_model(model[0], model[1], device=cfg.device), cfg
    name = model or cfg.model or stored.get("model")
    lm = load_model(name, dtype=cfg.dtype, device=cfg.device)
    cfg = cfg.model_copy(update={"model": name})
    if lm.msa is not None:  # an MSA checkpoint brings its own P, top-k and router layers
        own = {"chunk_size": lm.msa.chunk_size, "top_k": lm.msa.top_k,
               "msa_layers": lm.msa.layers}
        cfg = cfg.model_copy(update={k: v for k, v in own.items() if k not in explicit})
    return lm, cfg
