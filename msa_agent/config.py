"""One pydantic config for the whole runtime. Lower layers take plain arguments, not this object."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

RoutingMode = Literal["auto", "learned", "own_qk"]
RecallMode = Literal["hybrid", "msa", "lexical"]
RECALL_MODES: tuple[str, ...] = get_args(RecallMode)
AnswerFormat = Literal["free", "snap", "extractive"]
ANSWER_FORMATS: tuple[str, ...] = get_args(AnswerFormat)
# How Memory.answer reads memories (runtime/answer.py); here so the CLI checks it unloaded.
READ_MODES: tuple[str, ...] = ("auto", "pooled", "full", "kv_chunks", "text", "chunks")
LayerCombine = Literal["heads", "mean", "max"]


class MemoryConfig(BaseModel):
    """Settings of a memory space and its runtime.

    Settings that shape what is stored (model, layers, chunk size, store dtype, full K/V) are
    part of the space's fingerprint; opening a space with different ones is refused.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    model: str | None = Field(
        None, description="HF model id or local path; None = embedded SmolLM2-135M-Instruct."
    )
    device: str = Field("auto", description="'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1'.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "float32", description="Compute dtype of the backbone. 'auto': an existing space's "
        "own, and for a new one bfloat16 where the device computes it natively (a CUDA GPU "
        "that supports it, a CPU with AVX512-BF16 or AMX), else float32. A space is computed "
        "in one dtype: opening it in another is refused."
    )
    namespace: str = Field("default", min_length=1, description="Default namespace.")
    msa_layers: list[int] | None = Field(
        None, description="Layers that route and keep KV; None = the latter half (paper)."
    )
    chunk_size: int = Field(64, ge=1, le=4096, description="Tokens per pooled chunk (paper: 64).")
    max_doc_tokens: int = Field(
        512, ge=16, description="Longer texts are split into documents of at most this many tokens."
    )
    batch_tokens: int | None = Field(
        None, ge=1,
        description="Upper bound on padded tokens per encoder forward pass; None = 1024 on CPU "
        "(measured best on a 2-core CPU, docs/recall.md), 16384 on CUDA.",
    )
    keep_full_kv: bool = Field(
        False, description="Also store exact per-token pre-RoPE K/V (for read='full')."
    )
    full_kv_layers: Literal["msa", "all"] = Field(
        "msa", description="Layers whose per-token K/V keep_full_kv stores: the MSA layers, or "
        "'all' (read='full' then attends to memory in every layer, exactly like prefilling each "
        "memory's text alone; what a model not trained for MSA reads best).",
    )
    kv_frame: Literal["bare", "chat"] = Field(
        "chat", description="How keep_full_kv encodes a memory's per-token K/V: 'chat' (inside "
        "the chat frame that read='full' continues: the system turn, the worked example and "
        "'Memories:', so reading the K/V of one memory is exactly prefilling that frame with its "
        "text; an extra forward per memory at ingest) or 'bare' (the text alone, as the paper; "
        "MSA checkpoints). Chosen on validation: docs/answering.md.",
    )
    kv_positions: Literal["parallel", "sequential"] = Field(
        "sequential", description="read='full' of a chat-framed space: the memories one after "
        "another after the frame, best last (sequential), or all at the same positions "
        "(parallel, the paper's layout; MSA checkpoints). Chosen on validation.",
    )
    kv_blend: float = Field(
        0.0, ge=0.0, le=1.0, description="K/V reads (read='full' or 'kv_chunks') of a "
        "chat-framed space laid out sequentially: the share of the memory tokens re-encoded in "
        "the reader's context after the layout (those whose first layers' K/V change most "
        "there, as CacheBlend chooses), so that they see the memories before them as a joint "
        "prefill would. 0 re-encodes nothing (no prefill of memory at all); 1 every token (the "
        "joint prefill of the memories). Measured on validation: docs/answering.md.",
    )
    store_dtype: Literal["float16", "float32"] = "float16"
    summary_layer: int | None = Field(
        None, description="Also keep a summary vector of each memory: the attention input of "
        "this layer (negative: counted from the top, -1 the last) at the last token of the "
        "memory read inside PromptEOL's template ('This text : \"...\" means in one word:\"'), "
        "matched by cosine against the question's, read the same way: a third recall channel "
        "from the frozen model's own states, no training (docs/routing.md, 'A summary "
        "token'). A second forward per memory at ingest and per question at recall. None = "
        "off. Part of the space's layout.",
    )
    summary_weight: float = Field(
        0.09375, ge=0, description="Weight of the summary channel in fusion (MSA routing: 1, "
        "its scores over its pool's best), in a space with a summary_layer; 0 turns the "
        "channel off at recall (no question forward for it), the space then routes exactly "
        "as one without summaries. With summary_norm='z' the channel adds weight x each "
        "memory's z-score within the pool. 0.09375 with 'z' was chosen on the val splits: "
        "the best mean over routing='msa' and 'hybrid' of the settings that lower no val "
        "cell (docs/routing.md).",
    )
    summary_norm: Literal["max", "minmax", "z"] = Field(
        "z", description="How fusion='sum' scales the summary channel's cosines within its "
        "pool: z-scores (a memory that stands out of the pool gains most), min-max, or over "
        "the best as every other channel (docs/routing.md).",
    )
    routing: RoutingMode = Field(
        "auto",
        description="'learned' needs a router; 'own_qk' uses the model's own Q/K (chance-level "
        "across documents, see docs/recall.md); 'auto' = learned if a router exists.",
    )
    router_path: str | None = Field(
        None, description="Router safetensors; None = the one shipped for the model, if any."
    )
    layer_combine: LayerCombine = Field(
        "heads",
        description="How per-layer routing combines into one ranking: 'heads' treats layers as "
        "extra heads in the paper's rule; 'mean'/'max' reduce per-layer document scores.",
    )
    route_top_tokens: int = Field(
        2, ge=1, le=16,
        description="The query side of the routing rule: a chunk scores the mean of its "
        "`route_top_tokens` best query tokens (1 = the paper's max over query tokens; 2 chosen "
        "on validation splits, docs/routing.md). A setting of the space, stored with it; the "
        "Triton kernel implements it too.",
    )
    routing_key_dtype: Literal["float32", "bfloat16", "float16", "float8"] = Field(
        "float32",
        description="Dtype of the routing keys held resident for ranking (not of the stored "
        "ones): 'float32' is exact; 'bfloat16'/'float16' take half the memory and 'float8' "
        "(e4m3, one scale per chunk) a quarter, at a measured cost in top-k agreement "
        "(docs/scale.md). Scores are computed in float32 either way.",
    )
    routing_query_dtype: Literal["auto", "same", "bfloat16"] = Field(
        "auto",
        description="What a recall's query forward runs on: 'same', the backbone with the "
        "router's query adapter hooked on; 'bfloat16', a bfloat16 copy of the backbone with "
        "the adapter merged in (half the float32 weights more in memory; stored keys, K/V and "
        "answers keep the backbone); 'auto', bfloat16 where the backbone computes in float32 "
        "on a device that computes bfloat16 natively, where it kept every validation recall "
        "cell and cut a 2-core CPU recall by a quarter (docs/recall.md).",
    )
    top_k: int = Field(16, ge=1, description="Default number of memories recall returns.")
    answer_k: int = Field(
        2, ge=1, description="Default number of memories Memory.answer reads (k=None). 2 was "
        "chosen on validation splits for the embedded 135M reader, which answers from the "
        "wrong memory more often the more it reads (docs/answering.md); an MSA checkpoint "
        "brings its own top-k instead.",
    )
    read_superseded: bool = Field(
        False, description="Memory.answer also reads a hit that a newer hit restates (an older "
        "version of a changed fact, by hybrid recall's version rule). False (chosen on the "
        "sessions val split: changed facts 0.67 against 0.50, nothing else moved; "
        "docs/answering.md) reads the newest version only; both stay in the reported hits.",
    )
    answer_format: AnswerFormat = Field(
        "extractive", description="How Memory.answer turns generation into an answer: "
        "'extractive' (default, chosen on the val splits: 67 of 135 right against 65 for "
        "snap and 61 free; docs/answering.md) decodes under a constraint so that every "
        "answer is a verbatim span of one line of the memories read, from the lines that "
        "share a content word with the question when any does, or from its second hop when "
        "another such line holds a whole name the best one holds (msa_agent.runtime.extract; "
        "with those rules 92 of 135 on val); 'snap' generates freely, then replaces each "
        "capitalised word the memories read lack by their closest one (a misspelt copy of a "
        "rare name); 'free' is the greedy text as generated. Without memories answers stay "
        "free.",
    )
    group_by_source: bool = Field(
        False, description="recall returns only the best part of each source, so the parts of "
        "one long text (a file, a session) do not fill the k slots; recall(group=...) overrides.",
    )
    recall_mode: RecallMode = Field(
        "hybrid",
        description="Recall channels: 'hybrid' fuses MSA routing with the lexical (BM25, SQLite "
        "FTS5) channel; 'msa' or 'lexical' alone. Recall's `routing=` overrides it per call.",
    )
    fusion: Literal["rrf", "sum"] = Field(
        "sum", description="How hybrid recall fuses the channels: reciprocal-rank fusion or a "
        "weighted sum of scores divided by each channel's best (docs/recall.md).",
    )
    fusion_pool: int = Field(50, ge=1, description="Candidates each channel ranks for fusion.")
    fusion_complete: bool = Field(
        True, description="Hybrid recall also scores, by MSA routing, the lexical candidates "
        "outside MSA's pool, so every fused candidate has both channels' real scores.")
    rrf_k: int = Field(60, ge=1, description="Reciprocal-rank fusion constant.")
    lexical_weight: float = Field(
        2.0, ge=0, description="Weight of the lexical channel in fusion (MSA routing: 1).")
    recency_weight: float = Field(
        0.0, ge=0, description="Share of the best fused score that recency can add (newest "
        "candidate: all of it, oldest: none): newer memories win near-ties (changed facts).",
    )
    newer_within: float = Field(
        0.5, ge=0, le=1, description="A memory ranks above an older one whose fused score it "
        "reaches within this fraction (the newer version of a changed fact wins a near-tie).",
    )
    newer_subject_max: int = Field(
        2, ge=0, description="newer_within only reorders two memories that share a query word "
        "held by at most this many candidates (versions of one fact share their subject word; "
        "long sessions that share common words do not). 0 = any near-tie.",
    )
    newer_cover: float = Field(
        0.5, ge=0, le=1, description="newer_within only lets a memory pass an older one when "
        "it holds at least this share of the query words the older one holds (a newer version "
        "restates the subject; a session sharing one word of the question does not). 0 = off.",
    )
    more_words_within: float = Field(
        0.05, ge=0, le=1, description="A memory ranks above one whose fused score it reaches "
        "within this fraction when it holds every query word that one holds and more, and they "
        "share a query word held by at most newer_subject_max candidates (of two memories about "
        "one subject, the one saying more of what was asked wins a near-tie). 0 = off.",
    )
    newer_gap_s: float = Field(
        3600.0, ge=0, description="How much older (seconds) a memory must be for "
        "newer_within to apply: memories written together are not versions of each other.",
    )
    host_cache_mb: int | None = Field(
        None, ge=0,
        description="Host tier of memory K/V read for answers (pinned on CUDA, moved to the GPU "
        "in one gather launch); None = 2048 MB on CUDA, 256 MB on CPU; 0 = read the store "
        "each time.",
    )
    gpu_cache_mb: int | None = Field(
        None, ge=0,
        description="GPU tier of memory K/V above the host tier (CUDA only): memories read "
        "recently stay in GPU memory, least recently used evicted first; None = 1024 MB; "
        "0 = none (every read gathers from the host tier).",
    )
    prefetch: int | None = Field(
        None, ge=0,
        description="How many memories an answer starts loading into the K/V tiers in the "
        "background once it has read its own (K/V reads only): the candidates ranked just after "
        "the ones read, which the next round of an interleave (or a follow-up) reads next. "
        "None = 2 on CUDA (the next round reads answer_k = 2; the worker runs on host cores the "
        "GPU's generation leaves idle), 0 on CPU: on a 2-core CPU with a local store round 2's "
        "hit rate rose 0.49 -> 0.69 but its read got only 2-3 ms faster, while the worker "
        "(~35 ms a question, on the same cores) made the answer it overlapped ~24 ms slower "
        "(docs/results/prefetch-cpu.json). 0 = off.",
    )
    compact_dead_fraction: float | None = Field(
        0.25, gt=0, le=1,
        description="After a forget, compact the arrays (reclaim the disk of deleted rows) once "
        "this share of their rows is dead; None = only on `Memory.compact()` / `msa compact`.",
    )
    meta_url: str | None = Field(
        None, description="Remote storage (docs/store.md): a PostgreSQL SQLAlchemy URL "
        "(postgresql+psycopg://user@host:5432/db) for the space's metadata; the path given to "
        "Memory.open is then the space's name (its schema) in that database. None = a local "
        "space: SQLite and Zarr in the folder at that path.",
    )
    arrays_url: str | None = Field(
        None, description="With meta_url: the fsspec URL of the space's arrays folder "
        "(s3://bucket/prefix, file:///shared/folder).",
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec options of arrays_url (endpoint_url, key, "
        "secret...); never stored in the space.",
    )
    hop_routing: Literal["same", "hybrid", "msa", "lexical"] = Field(
        "lexical", description="Recall channels of the interleave rounds after the first "
        "('same' = the request's own); see docs/recall.md for what was measured.",
    )
    hop_min_score: float | None = Field(
        None, description="Memory interleave: a later round whose best new memory scores below "
        "this ends the rounds (None = only the round limit and, for 'auto', a repeat).",
    )

    @model_validator(mode="after")
    def _remote_urls_together(self) -> MemoryConfig:
        if (self.meta_url is None) != (self.arrays_url is None):
            raise ValueError("meta_url and arrays_url go together: a remote space keeps its "
                             "metadata in PostgreSQL and its arrays at an fsspec URL")
        return self

    @field_validator("msa_layers")
    @classmethod
    def _layers_sorted_unique(cls, v: list[int] | None) -> list[int] | None:
        if v is None:
            return v
        if not v or len(set(v)) != len(v) or any(i < 0 for i in v):
            raise ValueError("msa_layers must be a non-empty list of distinct layer indices >= 0")
        return sorted(v)


@dataclass(frozen=True)
class SpaceLayout:
    """What shapes a space's stored arrays: recorded with the space and with its bundles.

    One definition for the facade (an existing space keeps its layout), the runtime (the
    fingerprint and array specs) and bundles (a new space recreates the bundle's layout).
    """

    msa_layers: tuple[int, ...] | None = None
    chunk_size: int = 64
    store_dtype: str = "float16"
    keep_full_kv: bool = False
    full_kv_layers: str = "msa"
    max_doc_tokens: int = 512
    kv_frame: str = "bare"
    summary_layer: int | None = None

    @classmethod
    def of(cls, cfg: MemoryConfig) -> SpaceLayout:
        return cls.from_json(cfg.model_dump())

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SpaceLayout:
        """The layout fields present in ``data`` (a stored setting or a config dump)."""
        known = {k: data[k] for k in LAYOUT_FIELDS if data.get(k) is not None}
        if "msa_layers" in known:
            known["msa_layers"] = tuple(int(i) for i in known["msa_layers"])
        return cls(**known)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["msa_layers"] = None if self.msa_layers is None else list(self.msa_layers)
        return out


# How a space routes, stored with it and kept by later opens unless the caller sets them
ROUTING_SETTINGS = ("routing", "router_path", "route_top_tokens")
LAYOUT_FIELDS = ("msa_layers", "chunk_size", "store_dtype", "keep_full_kv", "full_kv_layers",
                 "max_doc_tokens", "kv_frame", "summary_layer")
