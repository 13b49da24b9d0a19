"""``msa export`` / ``msa import``: bundles round-trip ids, text, metadata and arrays."""
# ruff: noqa: F811 - pytest fixtures imported from cli_fixtures are parameters here

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_fixtures import Msa, docs, model_dir, msa  # noqa: F401

from msa_agent.errors import InvalidInputError
from msa_agent.runtime.bundle import VERSION, read_manifest
from tests_helpers import make_llama, make_tokenizer


@pytest.mark.parametrize("name", ["bundle", "bundle.zip"])
def test_export_import_into_a_fresh_path(msa, docs: Path, tmp_path: Path, name: str) -> None:
    msa("ingest", str(docs), "--meta", "project=x")
    before = msa.json("ls")
    query = msa.json("recall", "capital of France", "-k", "3")
    out = msa.json("export", str(tmp_path / name))
    assert out["memories"] == 3 and Path(out["path"]).exists()
    manifest = read_manifest(tmp_path / name)
    assert manifest.memories == 3 and {a.name for a in manifest.arrays} >= {"route_k"}

    fresh = Msa(tmp_path / "fresh")  # no init: model and layout come from the bundle
    assert fresh.json("import", str(tmp_path / name)) == \
        {"imported": 3, "skipped": 0, "reencoded": False}
    assert fresh.json("ls") == before  # same ids, text, metadata, timestamps
    again = fresh.json("recall", "capital of France", "-k", "3")
    assert [(h["id"], round(h["score"], 4)) for h in again] == \
        [(h["id"], round(h["score"], 4)) for h in query]
    assert fresh.json("import", str(tmp_path / name))["skipped"] == 3  # re-run is a no-op


def test_export_one_namespace_and_refuse_existing_dest(msa, tmp_path: Path) -> None:
    msa("ingest", "-", "--namespace", "work", input="standup at 10")
    msa("ingest", "-", input="personal note")
    assert msa.json("export", str(tmp_path / "b"), "--namespace", "work")["memories"] == 1
    result = msa("export", str(tmp_path / "b"), code=2)
    assert "already exists" in result.stderr


def test_import_into_a_space_of_another_model_is_refused(msa, tmp_path: Path) -> None:
    msa("ingest", "-", input="hello")
    msa("export", str(tmp_path / "b"))
    other_model = tmp_path / "other-model"
    make_llama(seed=1).save_pretrained(other_model)
    make_tokenizer().save_pretrained(other_model)
    other = Msa(tmp_path / "other")
    other("init", "--model", str(other_model))
    result = other("import", str(tmp_path / "b"), code=1)
    assert "bundle was encoded with model" in result.stderr
    assert other.json("stats")["memories"] == 0


def test_bad_bundles_are_refused(msa, tmp_path: Path) -> None:
    msa("ingest", "-", input="hello")
    msa("export", str(tmp_path / "b"))
    with pytest.raises(InvalidInputError, match="no bundle"):
        read_manifest(tmp_path / "missing")
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    manifest["version"] = VERSION + 1
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(manifest))
    assert "upgrade msa-agent" in msa("import", str(tmp_path / "b"), code=2).stderr
    manifest["version"] = VERSION
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "b" / "memories.jsonl").write_text("{}\n")
    assert "checksum" in msa("import", str(tmp_path / "b"), code=2).stderr


@pytest.mark.filterwarnings("ignore::msa_agent.runtime.engine.RoutingQualityWarning")
def test_import_under_another_router_reencodes_routing_keys(tmp_path: Path, tiny_pair) -> None:
    from msa_agent.memory import Memory
    from msa_agent.model.loader import model_fingerprint, wrap_model
    from msa_agent.model.shape import ModelShape
    from msa_agent.train import TrainableRouter, save_router

    layers, texts = [2, 3], ["Paris is the capital of France.", "Bob likes green tea."]
    lm = wrap_model(*tiny_pair)
    router = save_router(TrainableRouter(ModelShape.of(lm.model), layers, rank=4, seed=1),
                         tmp_path / "r.safetensors", model_fingerprint(lm))
    kw = {"model": tiny_pair, "msa_layers": layers}
    with Memory.open(tmp_path / "a", routing="own_qk", **kw) as mem:
        ids = mem.remember_many(texts)
        mem.export(tmp_path / "b")
    with Memory.open(tmp_path / "fresh", router_path=str(router), **kw) as mem:
        mem.remember_many(texts)
        want = [(round(h.score, 3)) for h in mem.recall("capital", k=2)]
    with Memory.open(tmp_path / "c", router_path=str(router), **kw) as mem:
        assert mem.import_(tmp_path / "b").reencoded
        hits = mem.recall("capital", k=2)
        assert [round(h.score, 3) for h in hits] == want and {h.id for h in hits} == set(ids)
