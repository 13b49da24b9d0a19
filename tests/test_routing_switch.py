"""A space remembers its routing; a re-encode cut short is redone at the next open."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from msa_agent import Memory
from msa_agent.model.loader import model_fingerprint, wrap_model
from msa_agent.model.shape import ModelShape
from msa_agent.store import Space
from msa_agent.train import TrainableRouter, save_router
from msa_testing import make_tokenizer

pytestmark = pytest.mark.filterwarnings("ignore::msa_agent.runtime.engine.RoutingQualityWarning")
TEXTS = [f"Fact number {i}: the quick brown fox likes green tea." for i in range(6)]


def _open(path: Path, pair, **kw) -> Memory:  # noqa: ANN001
    return Memory.open(path, model=pair, chunk_size=8, msa_layers=[2, 3], **kw)


def _route_k(path: Path) -> tuple[np.ndarray, str]:
    with Space.open(path) as space:
        rows = space.live_chunks()
        return np.concatenate(space.read("route_k", rows)), space.get_setting("router_id")


def test_killed_reencode_is_redone_and_routing_is_remembered(tmp_path: Path, tiny_pair,
                                                             monkeypatch) -> None:
    lm = wrap_model(*tiny_pair)
    tr = TrainableRouter(ModelShape.of(lm.model), [2, 3], rank=4, seed=3)
    router = save_router(tr, tmp_path / "r.safetensors", model_fingerprint(lm))
    with _open(tmp_path / "m", tiny_pair, routing="own_qk") as mem:
        mem.remember_many(TEXTS)
    own_keys, own_id = _route_k(tmp_path / "m")

    calls = {"n": 0}
    real = Space.overwrite

    def dying(self, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt("killed mid re-encode")
        return real(self, *a, **k)

    monkeypatch.setattr(Space, "overwrite", dying)
    with pytest.raises(KeyboardInterrupt):
        _open(tmp_path / "m", tiny_pair, router_path=str(router))
    monkeypatch.setattr(Space, "overwrite", real)
    assert _route_k(tmp_path / "m")[1].startswith("partial:")

    with _open(tmp_path / "m", tiny_pair) as mem:  # stored routing is own_qk: keys redone
        assert mem.stats().routing == "own_qk"
    keys, rid = _route_k(tmp_path / "m")
    assert rid == own_id
    np.testing.assert_allclose(keys, own_keys, rtol=1e-3, atol=1e-3)


def test_reencoding_a_split_memory_uses_its_original_token_ids(tmp_path: Path,
                                                               tiny_llama) -> None:
    # a tokenizer that adds a prefix space (as SentencePiece ones do) tokenises a part cut
    # from the middle of a text differently on its own: re-encoding must not do that
    tiny_pair = (tiny_llama, make_tokenizer(prefix_space=True))
    lm = wrap_model(*tiny_pair)
    tr = TrainableRouter(ModelShape.of(lm.model), [2, 3], rank=4, seed=5)
    router = save_router(tr, tmp_path / "r.safetensors", model_fingerprint(lm))
    text = " ".join(TEXTS * 4)  # several documents at max_doc_tokens=32
    with _open(tmp_path / "old", tiny_pair, routing="own_qk", max_doc_tokens=32) as mem:
        src = mem.remember(text)
        assert len(mem.list(where={"source_id": src})) > 2
    with _open(tmp_path / "old", tiny_pair, router_path=str(router)):
        pass  # re-encodes on open
    with _open(tmp_path / "fresh", tiny_pair, router_path=str(router), max_doc_tokens=32) as mem:
        mem.remember(text)
    np.testing.assert_allclose(_route_k(tmp_path / "old")[0], _route_k(tmp_path / "fresh")[0],
                               rtol=1e-3, atol=1e-3)


def test_the_query_rule_is_stored_with_the_space(tmp_path: Path, tiny_pair) -> None:
    """``route_top_tokens`` is a setting of the space: later opens keep it unless told."""
    with _open(tmp_path / "m", tiny_pair, route_top_tokens=3) as mem:
        mem.remember_many(TEXTS)
        three = [h.id for h in mem.recall("green tea fox", k=6, routing="msa")]
    with _open(tmp_path / "m", tiny_pair) as mem:
        assert mem.config.route_top_tokens == 3
        assert [h.id for h in mem.recall("green tea fox", k=6, routing="msa")] == three
    with _open(tmp_path / "m", tiny_pair, route_top_tokens=1) as mem:
        assert mem.config.route_top_tokens == 1
    with Space.open(tmp_path / "m") as space:
        assert space.get_setting("config")["route_top_tokens"] == 1


REENCODER = """
import sys, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, {tests!r})
from msa_testing import make_llama, make_tokenizer
from msa_agent.memory import Memory
import msa_agent.runtime.engine
pair = (make_llama(), make_tokenizer())
print("ready", flush=True)  # imports done: what follows is the open and its re-encode
with Memory.open({path!r}, model=pair, chunk_size=8, msa_layers=[2, 3],
                 router_path={router!r}) as mem:
    print("reencoded", flush=True)
"""


@pytest.mark.parametrize("delay", [0.3, 1.0, 2.0])
def test_sigkill_during_reencode_is_redone_to_the_new_routers_keys(
        tmp_path: Path, tiny_pair, delay: float) -> None:
    """A real SIGKILL at some moment of a router switch's re-encode (issue 16): the next open
    with that router ends with every key equal to a fresh encode under it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    lm = wrap_model(*tiny_pair)
    tr = TrainableRouter(ModelShape.of(lm.model), [2, 3], rank=4, seed=3)
    router = save_router(tr, tmp_path / "r.safetensors", model_fingerprint(lm))
    texts = [f"{TEXTS[0]} Entry {i}." for i in range(300)]  # re-encode takes ~2 s
    with _open(tmp_path / "m", tiny_pair, routing="own_qk") as mem:
        mem.remember_many(texts)
    with _open(tmp_path / "fresh", tiny_pair, router_path=str(router)) as mem:
        mem.remember_many(texts)
    want, _ = _route_k(tmp_path / "fresh")
    code = REENCODER.format(tests=str(Path(__file__).parent), path=str(tmp_path / "m"),
                            router=str(router))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore",
                                 "OMP_NUM_THREADS": "1"})
    assert proc.stdout is not None
    while (line := proc.stdout.readline()) and line.strip() != "ready":
        pass  # building the tiny model may print blank lines first
    assert line.strip() == "ready", "the re-encoding worker failed to start"
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate()
    with _open(tmp_path / "m", tiny_pair, router_path=str(router)) as mem:
        assert mem.stats().routing == "learned"
    keys, rid = _route_k(tmp_path / "m")
    assert not rid.startswith("partial:")
    np.testing.assert_allclose(keys, want, rtol=1e-3, atol=1e-3)
    print(f"delay {delay}s: killed {'after' if 'reencoded' in out else 'before'} the re-encode "
          "finished")
