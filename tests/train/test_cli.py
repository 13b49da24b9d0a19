"""``msa train-router`` end to end on a tiny saved model: texts in, a loadable router out."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from msa_agent.cli import app
from msa_agent.model.loader import load_model, model_fingerprint
from msa_agent.model.router import Router

PASSAGES = [
    "Alice works for Acme in Lisbon. Acme builds quick brown robots. Bob likes green tea.",
    "Paris is the capital of France. Berlin is the capital of Germany. Both are large.",
    "The lazy dog sleeps all day long. The quick fox jumps over it at noon. Nobody minds.",
    "Memory sparse attention routes a query. It attends to a few documents. It is fast.",
]


def _train_router_args(tmp_path: Path, tiny_pair) -> list[str]:  # noqa: ANN001
    """The tiny model and a notes file saved under ``tmp_path``; ``train-router``'s
    arguments for them, without ``--out`` and ``--steps``."""
    model, tok = tiny_pair
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    texts = tmp_path / "notes.txt"
    texts.write_text("\n\n".join(PASSAGES * 3))
    return ["train-router", "--model", str(tmp_path / "model"), "--texts", str(texts),
            "--layers", "2,3", "--batch-size", "4", "--rank", "4", "--device", "cpu",
            "--cache", str(tmp_path / "cache")]


def test_train_router_cli_writes_a_loadable_router(tmp_path: Path, tiny_pair) -> None:
    base = _train_router_args(tmp_path, tiny_pair)
    out = tmp_path / "router.safetensors"
    result = CliRunner().invoke(app, [*base, "--out", str(out), "--steps", "3"])
    assert result.exit_code == 0, result.output
    lm = load_model(str(tmp_path / "model"), device="cpu")
    router = Router.load(out, model_fingerprint(lm))
    assert router.layer_ids == [2, 3]
    # continue from that router (adaptation); "shipped" names none for this tiny model
    again = tmp_path / "adapted.safetensors"
    cont = [*base, "--out", str(again), "--steps", "2", "--entities", "1"]
    result = CliRunner().invoke(app, [*cont, "--init", str(out)])
    assert result.exit_code == 0, result.output
    assert Router.load(again, model_fingerprint(lm)).layer_ids == [2, 3]
    refused = CliRunner().invoke(app, [*cont, "--init", "shipped"])
    assert refused.exit_code == 2 and "no router is shipped" in refused.output


def test_train_router_cli_trains_a_deeper_router(tmp_path: Path, tiny_pair) -> None:
    out = tmp_path / "router.safetensors"
    base = [*_train_router_args(tmp_path, tiny_pair), "--out", str(out), "--steps", "3"]
    result = CliRunner().invoke(app, [*base, "--mlp-width", "8"])
    assert result.exit_code == 0, result.output
    lm = load_model(str(tmp_path / "model"), device="cpu")
    router = Router.load(out, model_fingerprint(lm))
    assert router.mlp == {"q": 8, "k": 8} and router.keys_from_pooled
    bad = CliRunner().invoke(app, [*base, "--mlp-width", "-1"])
    assert bad.exit_code == 2 and "mlp-width" in bad.output


def test_train_router_cli_learns_layer_weights(tmp_path: Path, tiny_pair) -> None:
    out = tmp_path / "router.safetensors"
    base = [*_train_router_args(tmp_path, tiny_pair), "--out", str(out), "--steps", "3"]
    result = CliRunner().invoke(app, [*base, "--layer-weights", "--lr", "0.05"])
    assert result.exit_code == 0, result.output
    lm = load_model(str(tmp_path / "model"), device="cpu")
    weight = Router.load(out, model_fingerprint(lm)).layer_weight
    assert weight is not None and weight.shape == (2,)
    assert abs(float(weight.mean()) - 1) < 1e-5 and float((weight - 1).abs().max()) > 0
