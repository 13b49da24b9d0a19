"""The append benchmark runs at a tiny size and reports both rules."""

from __future__ import annotations

import json
from pathlib import Path

from msa_agent.bench.index_append import main


def test_index_append_reports_both_rules(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    main(rows=64, appends=3, out=out)
    report = json.loads(out.read_text())
    assert report["rows"] == 64 and report["appends"] == 3
    for rule in ("in_place_ms", "cat_ms"):
        assert 0 <= report[rule]["p50"] <= report[rule]["max"]
