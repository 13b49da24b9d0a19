"""The reading comparison's summary (the generation itself needs the real model)."""

from __future__ import annotations

import pytest

from msa_agent.bench.reading import VARIANTS, summary
from msa_agent.runtime.answer import ORDERS, READ_MODES


def test_summary_counts_per_kind_and_overall() -> None:
    rows = [{"task": "t", "variant": "v", "kind": "a", "correct": True, "f1": 1.0,
             "prompt_tokens": 10},
            {"task": "t", "variant": "v", "kind": "b", "correct": False, "f1": 0.0,
             "prompt_tokens": 30}]
    by = {(r["kind"], r["variant"]): r for r in summary(rows)}
    assert by["all", "v"]["n"] == 2 and by["all", "v"]["accuracy"] == pytest.approx(0.5)
    assert by["a", "v"]["accuracy"] == 1.0 and by["b", "v"]["prompt_tokens"] == 30


def test_every_variant_is_a_valid_runtime_setting() -> None:
    for mode, _, order, _ in VARIANTS.values():
        assert mode in READ_MODES and order in ORDERS
