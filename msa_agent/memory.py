"""The ``Memory`` facade: validates, locks and formats; the runtime does the rest.

It holds no algorithm and no state of its own beyond the config: the :class:`Engine` owns the
space, the routing index and the caches (``msa_agent.runtime``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msa_agent.config import RECALL_MODES, MemoryConfig
from msa_agent.errors import InvalidInputError, UnknownMemoryError
from msa_agent.model.loader import LoadedModel
from msa_agent.model.text import check_encodable, check_label, check_text
from msa_agent.runtime.ask import answer_stream
from msa_agent.runtime.bundle import ExportReport, ImportReport, Manifest, read_manifest
from msa_agent.runtime.engine import Engine, NewDoc
from msa_agent.runtime.interleave import Hops, max_rounds
from msa_agent.runtime.results import (
    Recalled,
    Scope,
    explanation,
    memory_event,
    memory_record,
    page,
    recall_hit,
)
from msa_agent.runtime.setup import resolve_config, resolve_model, space_location
from msa_agent.runtime.stream import AnswerStream
from msa_agent.store import (
    RemoteLocation,
    Space,
    SpaceLockedError,
    SpaceReadOnlyError,
    StoredMemory,
)
from msa_agent.types import Answer, Explanation, MemoryEvent, MemoryRecord, RecallHit, SpaceStats

if TYPE_CHECKING:
    import torch

ITEM_FIELDS = {"text", "kind", "metadata", "session_id", "user_id", "agent_id", "namespace",
               "at", "key", "expires_at", "ttl"}
MAX_KEY_CHARS = 255


class Memory:
    """Lifelong memory of an agent, persisted in a folder.

    >>> with Memory.open("./mem") as mem:  # doctest: +SKIP
    ...     mid = mem.remember("The cat is called Ada.", kind="session")
    ...     mem.recall("What is the cat's name?", k=3)
    """

    def __init__(self, engine: Engine, config: MemoryConfig) -> None:
        self._engine, self.config = engine, config
        self._lock = engine.lock

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def open(cls, path: str | Path, model: str | LoadedModel | tuple[Any, Any] | None = None,
             namespace: str = "default", *, config: MemoryConfig | None = None,
             read_only: bool = False, **overrides: Any) -> Memory:
        """Open (or create) the memory space at ``path``.

        ``model``: an HF id or local path, a ``(model, tokenizer)`` pair you already hold, or
        None for the space's own model (the embedded SmolLM2-135M-Instruct for a new space).
        ``overrides`` are :class:`MemoryConfig` fields. A space is bound to one model: opening
        it with another is refused (``FingerprintMismatchError``). A space is written by one
        ``Memory`` at a time, in one process: another writable open raises
        ``SpaceLockedError`` until that one is closed (threads share the one ``Memory``).
        ``read_only=True`` opens an existing space without that lock, next to its writer in
        another process: recall, answer, get and list see the writer's commits (each recall
        and answer first picks up what was committed since the last); writes raise
        ``SpaceReadOnlyError``.
        """
        _flag("read_only", read_only)
        cfg, explicit = resolve_config(config, namespace, overrides)
        try:
            where = space_location(path, cfg)  # a folder, or a remote space (cfg.meta_url)
            lm, cfg = resolve_model(where, model, cfg, explicit)
            return cls(Engine.open(where, lm, cfg, read_only), cfg)
        except SpaceLockedError as exc:
            raise SpaceLockedError(
                f"{exc}: one Memory (one process) writes a space at a time; close it there "
                "first, or open with read_only=True to read beside it") from None

    @staticmethod
    def exists(path: str | Path) -> bool:
        """Whether ``path`` holds a memory space (nothing is opened or loaded)."""
        return Space.is_space(path)

    @staticmethod
    def read_bundle(path: str | Path) -> Manifest:
        """A bundle's manifest (model, layout, counts), checked but not imported."""
        return read_manifest(path)

    def close(self) -> None:
        """Release the space (its lock and files). Safe to call twice."""
        self._engine.close()

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writes
    def remember(self, text: str, kind: str = "document",
                 metadata: Mapping[str, Any] | None = None, *, session_id: str | None = None,
                 user_id: str | None = None, agent_id: str | None = None,
                 namespace: str | None = None, at: datetime | None = None,
                 key: str | None = None, dedupe: bool = False,
                 expires_at: datetime | None = None,
                 ttl: timedelta | float | None = None) -> str:
        """Encode and store one memory; returns its id.

        A text longer than ``max_doc_tokens`` is split into several documents; the id returned
        is the first part's, and every part's ``source_id`` is that id (``forget`` of any part
        removes all parts). ``at``: when it happened (default now; naive = UTC), for
        importing histories with their real dates: recall prefers newer memories in near-ties
        and filters by ``since``/``until`` on it.

        ``key`` (upsert): a name of yours for this memory, unique in its namespace. If a
        memory with this key exists there, it is replaced by this one (same id, as
        :meth:`update`, but text, kind, metadata and ids all taken from this call; its
        ``created_at`` kept unless ``at`` is given) and its id returned; unchanged, nothing is
        written. ``dedupe=True``: if the namespace already holds a memory with exactly this
        text, its id is returned and nothing is stored (default False: a repeated text is
        stored again).

        ``expires_at`` (naive = UTC) or ``ttl`` (a ``timedelta`` or seconds from now): from
        then on recall, answer and :meth:`list` leave the memory out, and :meth:`compact`
        deletes it (:meth:`get` still returns it until then). An :meth:`update` keeps it; an
        upsert by ``key`` sets it anew (None: never expires).
        """
        item = dict(text=text, kind=kind, metadata=metadata, session_id=session_id,
                    user_id=user_id, agent_id=agent_id, namespace=namespace, at=at, key=key,
                    expires_at=expires_at, ttl=ttl)
        return self.remember_many([item], dedupe=dedupe)[0]

    def remember_many(self, items: Iterable[str | Mapping[str, Any]], *,
                      dedupe: bool = False) -> list[str]:
        """Store many memories in one batched encoder pass and one atomic write.

        Each item is a text or a dict of :meth:`remember`'s arguments (``key`` included).
        Returns one id per item. Input is validated first: one bad item rejects the whole call
        and stores nothing. ``dedupe``: as :meth:`remember`, for every item (two equal texts
        of one call give one memory). Upserts by key commit in the same write.
        """
        _flag("dedupe", dedupe)
        if isinstance(items, (str, bytes, bytearray, memoryview, Mapping)):
            raise InvalidInputError(f"remember_many() takes a list of items, got one "
                                    f"{type(items).__name__}: use remember(), or wrap it in [...]")
        try:
            items = iter(items)
        except TypeError:
            raise InvalidInputError(f"remember_many() takes a list of items, got "
                                    f"{type(items).__name__}") from None
        self._writable()
        docs = [replace(self._doc(i, item), dedupe=dedupe) for i, item in enumerate(items)]
        return self._engine.add(docs) if docs else []

    def _writable(self) -> None:
        """Refuse a write on a read-only memory before any work (encoding) is done."""
        if self._engine.read_only:
            raise SpaceReadOnlyError(f"{self.path} was opened read-only (read_only=True): "
                                     "open it without read_only to write")

    def _doc(self, index: int, item: str | Mapping[str, Any]) -> NewDoc:
        spec = dict(item) if isinstance(item, Mapping) else {"text": item}
        unknown = set(spec) - ITEM_FIELDS
        if unknown:
            raise InvalidInputError(f"item {index}: unknown fields {sorted(unknown, key=str)}")
        text = check_text(spec.get("text"), f"item {index} text")
        kind = check_label("document" if spec.get("kind") is None else spec["kind"],
                           f"item {index} kind")
        if not kind:
            raise InvalidInputError(f"item {index}: kind must be a non-empty string")
        for name in ("namespace", "session_id", "user_id", "agent_id"):
            if spec.get(name) is not None:
                check_label(spec[name], f"item {index} {name}")
        metadata, at = spec.get("metadata"), spec.get("at")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise InvalidInputError(f"item {index}: metadata must be a mapping, "
                                    f"got {type(metadata).__name__}")
        if at is not None and not isinstance(at, datetime):
            raise InvalidInputError(f"item {index}: at must be a datetime, got {at!r}")
        return NewDoc(text=text, namespace=spec.get("namespace") or self.config.namespace,
                      kind=kind, metadata=dict(metadata or {}),
                      session_id=spec.get("session_id"), user_id=spec.get("user_id"),
                      agent_id=spec.get("agent_id"), created_at=at,
                      key=_key(spec.get("key"), f"item {index} key"),
                      expires_at=_expiry(spec.get("expires_at"), spec.get("ttl"),
                                         f"item {index}"))

    def update(self, id: str, *, text: str | None = None,
               metadata: Mapping[str, Any] | None = None, namespace: str | None = None) -> str:
        """Change a memory in place; returns its id (the first part's).

        ``id`` may be any part's; the whole source changes. A new ``text`` is split and
        encoded again and replaces every part (the first part keeps its id, later parts get
        new ones). ``metadata`` is MERGED into the stored metadata (its keys overwrite; to
        drop keys, upsert with ``remember(key=...)``, which replaces). ``created_at`` is
        kept. Atomic: a crash leaves the old version or the new one, and the old text's rows
        are deleted and wiped as by :meth:`forget`. An id unknown in ``namespace`` (default:
        this memory's) raises :class:`UnknownMemoryError`; nothing to change writes nothing.
        """
        if text is None and metadata is None:
            raise InvalidInputError("update() takes text= or metadata= (or both)")
        if text is not None:
            check_text(text, "text")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise InvalidInputError(f"metadata must be a mapping, got {type(metadata).__name__}")
        check_encodable(metadata, "metadata")
        self._writable()
        with self._lock:
            parts = self._parts(id, namespace)
        head = parts[0]
        doc = NewDoc(text="".join(p.text for p in parts) if text is None else text,
                     namespace=head.namespace, kind=head.kind,
                     metadata={**head.metadata, **(metadata or {})},
                     session_id=head.session_id, user_id=head.user_id,
                     agent_id=head.agent_id, replaces=head.source_id or head.id,
                     expires_at=head.expires_at)
        return self._engine.add([doc])[0]

    def _parts(self, id: object, namespace: str | None) -> list[StoredMemory]:
        """Every part of the source that ``id`` (any part's id) belongs to, in order."""
        m = self._owned(id, namespace)
        return self._engine.source(m.namespace, m.source_id or m.id) or [m]

    def history(self, id: str, *, namespace: str | None = None) -> list[MemoryEvent]:
        """Every add, update and forget of a memory and its other parts, oldest first, with
        when and what changed (text hashes and lengths, metadata keys; never text).

        It outlives :meth:`forget`: pass the forgotten memory's id (its first part's; a live
        memory may be named by any part's id). A memory stored before the space had a history
        (schema 3) starts with its first update. :class:`UnknownMemoryError` for an id with
        neither a memory nor a history in ``namespace`` (default: this memory's).
        """
        ns = self._namespace(namespace)
        if not check_label(id, "id"):
            raise InvalidInputError("id must be a non-empty string")
        with self._lock:
            m = self._engine.get(id)
            if m is not None and m.namespace != ns:
                raise UnknownMemoryError(f"no memory with id {id!r}")
            events = self._engine.history(id if m is None else m.source_id or m.id)
        if m is None and (not events or events[0].namespace != ns):
            raise UnknownMemoryError(f"no memory with id {id!r}")
        return [memory_event(e) for e in events]

    def forget(self, id: str | None = None, *, where: Mapping[str, Any] | None = None,
               namespace: str | None = None, all: bool = False) -> int:
        """Delete a memory (and the other parts of its source: any part's id removes them
        all), every match of ``where``, or (``all=True``) every memory of the namespace.

        Exactly one of ``id``, a non-empty ``where`` or ``all=True``; an empty ``where`` is
        refused (it would match everything). Each acts in ``namespace`` (default: this
        memory's): an id of another namespace is unknown here. Deletion is real: rows are
        removed, the arrays' rows overwritten (reclaimed on disk once
        ``compact_dead_fraction`` of them are dead) and the resident routing rows dropped.
        Returns the number of documents deleted. An unknown id raises
        :class:`UnknownMemoryError`.
        """
        _flag("all", all)
        if (id is not None) + (where is not None) + all != 1:
            raise InvalidInputError("forget() takes exactly one of an id, where= or all=True")
        if where is not None and isinstance(where, Mapping) and not where:
            raise InvalidInputError("forget(where={}) would delete the whole namespace; "
                                    "pass all=True to mean that")
        self._writable()
        with self._lock:
            if id is not None:
                parts = self._parts(id, namespace)  # validates id first (a list is refused)
                ids = {id} | {m.id for m in parts}
            else:
                scope = self._scope(namespace, where)
                ids = {m.id for m in self._engine.find(scope.namespace, scope.where)}
            return self._engine.remove(sorted(ids))

    def _owned(self, id: object, namespace: str | None) -> StoredMemory:
        """The stored memory ``id`` of ``namespace`` (default: this memory's); the same
        :class:`UnknownMemoryError` whether it does not exist or lives in another namespace."""
        if not check_label(id, "id"):
            raise InvalidInputError("id must be a non-empty string")
        ns = self._namespace(namespace)
        m = self._engine.get(id)
        if m is None or m.namespace != ns:
            raise UnknownMemoryError(f"no memory with id {id!r}")
        return m

    def compact(self) -> dict[str, int]:
        """Delete the memories that have expired (every namespace), then reclaim the disk of
        deleted memories; returns how many expired and the bytes on disk before and after."""
        self._writable()
        expired, before, after = self._engine.compact(_now())
        return {"expired": expired, "bytes_before": before, "bytes_after": after}

    # ------------------------------------------------------------------ reads
    def recall(self, query: str, k: int | None = None, where: Mapping[str, Any] | None = None,
               *, namespace: str | None = None, explain: bool = False, hops: Hops = 1,
               routing: str | None = None, since: datetime | None = None,
               until: datetime | None = None, offset: int = 0,
               min_score: float | None = None, group: bool | None = None) -> list[RecallHit]:
        """The ``k`` memories most relevant to ``query``, best first.

        Paging and trimming: ``offset`` skips the best ``offset`` (the next page), ``min_score``
        drops hits scoring below it (scores are the recall mode's: fused for hybrid),
        ``group`` (default ``MemoryConfig.group_by_source``) keeps only the best part of each
        source, so the parts of one long text do not fill the ``k`` slots.

        ``routing``: ``"hybrid"`` (default, ``MemoryConfig.recall_mode``) fuses MSA routing
        with a lexical BM25 channel; ``"msa"`` or ``"lexical"`` use one. Candidates are
        restricted to ``namespace`` (default: the space's), ``where`` (equality on
        kind/session_id/user_id/agent_id/source_id or metadata keys) and ``since <= created
        < until`` *before* top-k, so a memory outside them is never returned. ``hops`` > 1 or
        ``"auto"`` runs rounds (memory interleave): each later round routes with the question
        plus the matched chunk of the best new memory; hits record their ``round`` and ``via``.
        """
        self._checked(query, "query", k, hops)  # errors name the argument "query"
        return self.recall_many([query], k, where, namespace=namespace, explain=explain,
                                hops=hops, routing=routing, since=since, until=until,
                                offset=offset, min_score=min_score, group=group)[0]

    def recall_many(self, queries: Sequence[str], k: int | None = None,
                    where: Mapping[str, Any] | None = None, *, namespace: str | None = None,
                    explain: bool = False, hops: Hops = 1, routing: str | None = None,
                    since: datetime | None = None, until: datetime | None = None,
                    offset: int = 0, min_score: float | None = None,
                    group: bool | None = None) -> list[list[RecallHit]]:
        """:meth:`recall` of several queries with the same options, one list of hits per
        query, in order. Their backbone forwards run batched by length (the throughput of
        an agent asking several things at once), and so does their first routing round: one
        pass over the routing keys ranks every query (``RoutingIndex.rank_many``); fusion,
        later ``hops`` rounds, paging and the rest are each query's own. A padded batch may
        round a score's last bits differently from a lone ``recall``."""
        if isinstance(queries, str) or not isinstance(queries, Sequence):
            raise InvalidInputError("queries must be a sequence of strings")
        checked = [self._checked(q, f"queries[{i}]", k, hops) for i, q in enumerate(queries)]
        k = checked[0] if checked else 1
        _flag("explain", explain)
        mode = _recall_mode(routing)
        group = self.config.group_by_source if group is None else group
        _flag("group", group)
        _non_negative("offset", offset)
        if min_score is not None and (isinstance(min_score, bool) or not isinstance(
                min_score, (int, float)) or min_score != min_score):
            raise InvalidInputError(f"min_score must be a number, got {min_score!r}")
        if not queries:
            return []
        self._engine.follow_writer()
        scope = self._scope(namespace, where, since, until, alive=True)
        lexical = (mode or self.config.recall_mode) == "lexical"
        if lexical:
            qs: list[torch.Tensor | None] = [None] * len(queries)
        elif len(queries) == 1:  # a lone recall: the engine's one-query forward
            qs = [self._engine.query(queries[0])]
        else:
            qs = list(self._engine.query_many(list(queries)))
        firsts: list[list[Recalled] | None] = [None] * len(queries)
        if len(queries) > 1:  # every query's first page in one routing pass
            firsts = list(self._engine.recall_many(queries, offset + k, scope, hops, qs, mode,
                                                   evidence=explain))
        return [[recall_hit(h, self._explain(h) if explain else None)
                 for h in self._page(query, k, scope, hops, mode, offset, min_score, group, q,
                                     hits, explain)]
                for query, q, hits in zip(queries, qs, firsts)]

    def _page(self, query: str, k: int, scope: Scope, hops: Hops, mode: str | None,
              offset: int, min_score: float | None, group: bool,
              q: torch.Tensor | None, hits: list[Recalled] | None = None,
              evidence: bool = True) -> list[Recalled]:
        """Recall enough candidates for the page: grouping thins them (the parts of one long
        text), so the pool doubles until the page is full or the scope is exhausted. ``q``:
        the query's router queries, computed once by the caller (None for lexical recall).
        ``hits``: the recall of the first ``offset + k``, if already made (recall_many's
        batch); a larger pool is this query's own recall. ``evidence``: the hits' routing
        evidence, needed only to explain them (``Recall.recall``)."""
        wanted = offset + k
        while True:
            if hits is None:
                hits = self._engine.recall(query, wanted, scope, hops, q=q, mode=mode,
                                           evidence=evidence)
            chosen = page(hits, k, offset, min_score, group)
            if len(chosen) == k or len(hits) < wanted or not group:
                return chosen
            wanted, hits = wanted * 2, None

    def _checked(self, text: str, what: str, k: int | None, hops: Hops,
                 default: int | None = None) -> int:
        """Validated ``k`` for a recall or an answer (``hops`` checked too); clear errors.
        None: ``default``, else ``MemoryConfig.top_k``."""
        check_text(text, what)
        if k is None:
            k = self.config.top_k if default is None else default
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise InvalidInputError(f"k must be a positive integer, got {k!r}")
        max_rounds(hops)
        return k

    def _scope(self, namespace: str | None, where: Mapping[str, Any] | None,
               since: datetime | None = None, until: datetime | None = None,
               alive: bool = False) -> Scope:
        """A validated request scope; ``alive``: leave out what has expired by now."""
        if where is not None and not isinstance(where, Mapping):
            raise InvalidInputError(f"where must be a mapping, got {type(where).__name__}")
        check_encodable(where, "where")
        Space.check_where(where)
        for name, t in (("since", since), ("until", until)):
            if t is not None and not isinstance(t, datetime):
                raise InvalidInputError(f"{name} must be a datetime, got {t!r}")
        return Scope(self._namespace(namespace), dict(where) if where else None, since, until,
                     _now() if alive else None)

    def _namespace(self, namespace: object) -> str:
        """``namespace``, or this memory's when None (or empty)."""
        if namespace is None:
            return self.config.namespace
        return check_label(namespace, "namespace") or self.config.namespace

    def _explain(self, h: Recalled) -> Explanation:
        chunk = self._engine.chunk_text(h.memory.text, h.best_chunk)
        return explanation(h, chunk, self.config.layer_combine)

    def answer(self, question: str, k: int | None = None,
               where: Mapping[str, Any] | None = None, *, namespace: str | None = None,
               hops: Hops = 1, read: str = "auto", max_new_tokens: int = 64,
               stream: bool = False, routing: str | None = None) -> Answer | AnswerStream:
        """Answer ``question`` from memory: route (``hops`` rounds), read, generate greedily.

        ``k``: how many memories to read (default ``MemoryConfig.answer_k``, 2: a small reader
        answers better from fewer memories; recall's own default is ``top_k``).

        ``read``: ``"text"`` re-reads the memories' text, ``"chunks"`` only each memory's
        chunk that matches the question and its neighbours, ``"full"`` attends to their stored
        per-token K/V (space made with ``keep_full_kv=True``), ``"kv_chunks"`` to the stored
        K/V of the window ``"chunks"`` shows as text, ``"pooled"`` to their pooled K/V
        (MSA-trained models; each MSA layer reads its own top-k); ``"auto"`` picks ``pooled``
        for an MSA checkpoint, else ``kv_chunks`` on a space whose stored K/V reads like
        its text (``keep_full_kv=True, full_kv_layers="all"``, chat frame; as good on
        validation, no re-prefill) where that reaches the first token sooner (always on a
        CPU; on CUDA from 8 memories, below which re-reading the windows is sooner), and
        ``chunks`` otherwise (best on validation with the embedded model,
        docs/answering.md); the returned :class:`Answer` says which.
        With an MSA checkpoint, ``pooled`` reading and ``hops`` other than 1 run the paper's
        generative interleave: the model asks for documents by id (``<doc>2</doc>``), their
        text is appended and routing runs again (``msa_agent.runtime.generative``).
        With ``stream=True`` an iterable of text pieces is returned; its ``.answer`` is set
        once it is exhausted. ``routing``: the recall channels, as :meth:`recall`.
        """
        if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) \
                or max_new_tokens < 1:
            raise InvalidInputError(f"max_new_tokens must be >= 1, got {max_new_tokens!r}")
        k = self._checked(question, "question", k, hops, self.config.answer_k)
        _flag("stream", stream)
        self._engine.follow_writer()
        result = answer_stream(self._engine, question, k,
                               self._scope(namespace, where, alive=True), hops, read,
                               max_new_tokens, _recall_mode(routing))
        return result if stream else result.collect()

    def reencode_routing(self, router_path: str | Path | None = None) -> int:
        """Recompute the routing keys of every stored memory; their K/V are not touched.

        With ``router_path``, switch to that router first (it must belong to this space's
        model). ``open`` already re-encodes when a space's keys came from another router; call
        this to switch routers on an open memory, or to repair keys. Shows progress; returns
        the number of memories re-encoded.
        """
        self._writable()
        if router_path is None:
            return self._engine.refresh_routing()
        return self._engine.switch_router(router_path)

    def get(self, id: str, *, namespace: str | None = None) -> MemoryRecord:
        """The memory with this id in ``namespace`` (default: this memory's);
        :class:`UnknownMemoryError` if there is none there."""
        return memory_record(self._owned(id, namespace))

    def list(self, namespace: str | None = None, where: Mapping[str, Any] | None = None,
             limit: int | None = 100, offset: int = 0, newest_first: bool = False,
             include_expired: bool = False) -> list[MemoryRecord]:
        """Memories of a namespace (default: the space's), oldest first unless asked; those
        that have expired only with ``include_expired``."""
        if limit is not None:
            _non_negative("limit", limit)
        _non_negative("offset", offset)
        _flag("newest_first", newest_first)
        _flag("include_expired", include_expired)
        order = "-created_at" if newest_first else "created_at"
        scope = self._scope(namespace, where, alive=not include_expired)
        rows = self._engine.find(scope.namespace, scope.where, limit=limit, offset=offset,
                                 order=order, alive_at=scope.alive_at)
        return [memory_record(m) for m in rows]

    def namespaces(self) -> list[str]:
        return self._engine.namespaces()

    def stats(self) -> SpaceStats:
        """Counts and on-disk size of the space."""
        s, e = self._engine.stats(), self._engine
        return SpaceStats(path=str(e.path), model=e.lm.name, dtype=e.lm.dtype_name,
                          routing=e.routing_mode,
                          router_id=e.router_id, memories=s["memories"],
                          namespaces=s["namespaces"], tokens=s["tokens"], chunks=s["chunks"],
                          bytes_on_disk=s["bytes_on_disk"], host_cache=e.host_cache_stats())

    # ------------------------------------------------------------------ export / import
    def export(self, path: str | Path, namespaces: Sequence[str] | None = None,
               progress: Callable[[int], None] | None = None, *,
               all_namespaces: bool = False) -> ExportReport:
        """Write a portable bundle (see :mod:`msa_agent.runtime.bundle`) of this memory's
        namespace, or of ``namespaces``, or of every namespace (``all_namespaces=True``)."""
        if all_namespaces and namespaces is not None:
            raise InvalidInputError("give namespaces or all_namespaces=True, not both")
        chosen = None if all_namespaces else (
            [self.config.namespace] if namespaces is None else namespaces)
        return self._engine.export(path, chosen, progress)

    def import_(self, path: str | Path, progress: Callable[[int], None] | None = None, *,
                namespace: str | None = None, keep_namespaces: bool = False) -> ImportReport:
        """Add a bundle's memories, keeping their ids; refused for a bundle of another model.

        They land in ``namespace`` (default: this memory's), or each in the namespace it had
        when exported (``keep_namespaces=True``). A bad bundle changes nothing."""
        if keep_namespaces and namespace is not None:
            raise InvalidInputError("give namespace or keep_namespaces=True, not both")
        self._writable()
        target = None if keep_namespaces else self._namespace(namespace)
        return self._engine.import_bundle(path, progress, target)

    @property
    def path(self) -> Path | RemoteLocation:
        """The space's folder, or its ``RemoteLocation`` (``config.meta_url``)."""
        return self._engine.path


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _expiry(expires_at: object, ttl: object, what: str) -> datetime | None:
    """When a new memory expires: ``expires_at`` (naive = UTC), or now + ``ttl`` (a
    ``timedelta`` or seconds, > 0), or None (never). Not both."""
    if expires_at is not None and ttl is not None:
        raise InvalidInputError(f"{what}: give expires_at or ttl, not both")
    if expires_at is not None:
        if not isinstance(expires_at, datetime):
            raise InvalidInputError(f"{what}: expires_at must be a datetime, got {expires_at!r}")
        return expires_at if expires_at.tzinfo else expires_at.replace(tzinfo=timezone.utc)
    if ttl is None:
        return None
    if isinstance(ttl, (int, float)) and not isinstance(ttl, bool):
        if ttl != ttl or ttl in (float("inf"), float("-inf")):
            raise InvalidInputError(f"{what}: ttl must be finite, got {ttl!r}")
        try:
            ttl = timedelta(seconds=ttl)
        except OverflowError:
            raise InvalidInputError(f"{what}: ttl {ttl!r} is too large") from None
    if not isinstance(ttl, timedelta) or ttl <= timedelta(0):
        raise InvalidInputError(f"{what}: ttl must be a positive timedelta or number of "
                                f"seconds, got {ttl!r}")
    try:
        return _now() + ttl
    except OverflowError:
        raise InvalidInputError(f"{what}: ttl {ttl!r} is too large") from None


def _key(key: object, what: str) -> str | None:
    """A caller's upsert key: None, or a non-empty string of at most 255 characters."""
    if key is None:
        return None
    if not check_label(key, what) or len(key) > MAX_KEY_CHARS:  # type: ignore[arg-type]
        raise InvalidInputError(f"{what} must be a non-empty string of at most "
                                f"{MAX_KEY_CHARS} characters")
    return key  # type: ignore[return-value]


def _recall_mode(routing: str | None) -> str | None:
    if routing is not None and routing not in RECALL_MODES:
        raise InvalidInputError(f"routing must be one of {RECALL_MODES}, got {routing!r}")
    return routing


_MAX_INT = 2**63 - 1  # SQLite's largest INTEGER: limits and offsets reach its queries


def _non_negative(name: str, n: object) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= _MAX_INT:
        raise InvalidInputError(f"{name} must be an integer from 0 to 2**63 - 1, got {n!r}")


def _flag(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise InvalidInputError(f"{name} must be True or False, got {value!r}")
