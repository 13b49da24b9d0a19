"""Micro-benchmark of the store: ``python -m msa_agent.store.bench [--rows N]``.

Appends batches of 64 memories x 4 chunk rows of (15, 3, 64) float16 (SmolLM2-135M's
latter-half layers x KV heads x head_dim) until N chunk rows, then times ``read_all`` and a
16-memory recall read, for several zarr chunk lengths and codecs. Reports medians and best
cases (the dev VM is shared and noisy). Numbers go in docs/store.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from zarr.codecs import BloscCodec

from . import arrays as arrays_mod
from .space import Space
from .types import ArraySpec, NewMemory

ROW = (15, 3, 64)
BATCH, CHUNKS_PER_MEM = 64, 4


def synthetic(rng: np.random.Generator, n: int) -> np.ndarray:
    """KV-like rows: per-channel scale/offset (outlier channels) plus noise, float16."""
    scale = np.exp(rng.normal(0, 0.7, ROW[1:])).astype(np.float32)
    return (rng.standard_normal((n, *ROW), dtype=np.float32) * scale + scale).astype("float16")


def run(rows: int, rows_per_chunk: int, codec: BloscCodec | None, durable: bool,
        where: str) -> dict:
    arrays_mod.compressors_for = lambda spec: [codec] if codec else []  # type: ignore
    rng = np.random.default_rng(0)
    block = synthetic(rng, BATCH * CHUNKS_PER_MEM)
    with tempfile.TemporaryDirectory(dir=where) as d:
        spec = ArraySpec("route_k", "chunk", ROW, rows_per_chunk=rows_per_chunk)
        space = Space.create(Path(d) / "s", {"bench": 1}, [spec], durable=durable)
        mems = [NewMemory(text="x", n_chunks=CHUNKS_PER_MEM) for _ in range(BATCH)]
        data = [{"route_k": block[i * 4:(i + 1) * 4]} for i in range(BATCH)]
        t_adds = []
        for _ in range(rows // (BATCH * CHUNKS_PER_MEM)):
            t0 = time.perf_counter()
            space.add(mems, data)
            t_adds.append(time.perf_counter() - t0)
        t_all = []
        for _ in range(3):
            t0 = time.perf_counter()
            all_rows, _ = space.read_all("route_k")
            t_all.append(time.perf_counter() - t0)
        live = space.live_chunks()
        picks = [live[i] for i in rng.choice(len(live), 16, replace=False)]
        t_recall = []
        for _ in range(50):
            t0 = time.perf_counter()
            space.read("route_k", picks)
            t_recall.append(time.perf_counter() - t0)
        disk = space.stats()["arrays"]["route_k"]["bytes_on_disk"]
        space.close()
    batch_mb = block.nbytes / 1e6
    return {"add_ms_p50": 1e3 * float(np.median(t_adds)),
            "append_MBps_p50": batch_mb / float(np.median(t_adds)),
            "read_all_s_min": min(t_all), "read_all_MBps_max": all_rows.nbytes / 1e6 / min(t_all),
            "recall16_ms_p50": 1e3 * float(np.median(t_recall)),
            "recall16_ms_min": 1e3 * min(t_recall), "ratio": all_rows.nbytes / disk}


CODECS = {
    "none": None,
    "lz4-shuffle": BloscCodec(typesize=2, cname="lz4", clevel=5, shuffle="shuffle"),
    "zstd1-shuffle": BloscCodec(typesize=2, cname="zstd", clevel=1, shuffle="shuffle"),
    "zstd3-bitshuffle": BloscCodec(typesize=2, cname="zstd", clevel=3, shuffle="bitshuffle"),
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=20_480)
    p.add_argument("--chunks", type=int, nargs="*", default=[16, 64, 256])
    p.add_argument("--codecs", nargs="*", default=list(CODECS))
    p.add_argument("--durable", action="store_true")
    p.add_argument("--dir", default=".", help="where to put the temporary space")
    a = p.parse_args()
    print(f"{a.rows} rows x {ROW} float16 = {a.rows * np.prod(ROW) * 2 / 1e6:.0f} MB, "
          f"durable={a.durable}, dir={a.dir}")
    for c in a.chunks:
        for name in a.codecs:
            r = run(a.rows, c, CODECS[name], a.durable, a.dir)
            print(f"rows/chunk={c:4d} {name:17s} " + " ".join(
                f"{k}={v:.2f}" for k, v in r.items()), flush=True)


if __name__ == "__main__":
    main()
