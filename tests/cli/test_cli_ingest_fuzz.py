"""``msa ingest`` fuzzed (issue 16): folders of random files (binary, NULs, bad UTF-8, latin-1,
broken JSONL and PDFs, empty, odd names) are ingested or refused with a message and an exit
code, never a traceback, and the space stays consistent."""
# ruff: noqa: F811 - pytest fixtures imported from cli_fixtures are parameters here

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from cli_fixtures import Msa, model_dir  # noqa: F401
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msa_agent.cli import app

pytestmark = pytest.mark.filterwarnings("ignore::msa_agent.runtime.engine.RoutingQualityWarning")

SUFFIXES = [".md", ".txt", ".jsonl", ".json", ".pdf", ".log"]
CONTENT = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.text(alphabet="abcé ñ\n", max_size=200).map(lambda t: t.encode("latin-1")),
    st.just(b""),
    st.just(b"\x00" * 64),
    st.just(b'{"role": "user", "content": "hi"}\n{"role": broken\n'),
    st.just(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"),
    st.just(("word " * 5000).encode()),
)
NAME = st.text(alphabet="abcxyz_-. éü", min_size=1, max_size=12).filter(
    lambda n: n.strip(". ") == n and n not in (".", ".."))
FILES = st.lists(st.tuples(NAME, st.sampled_from(SUFFIXES), CONTENT), min_size=1, max_size=3)


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Msa:  # noqa: F811
    cli = Msa(tmp_path_factory.mktemp("fuzz") / "space")
    cli("init", "--model", str(model_dir))
    return cli


@settings(max_examples=int(os.environ.get("MSA_HYPOTHESIS_EXAMPLES", "20")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(FILES)
def test_ingest_of_any_files_gives_a_result_or_a_clear_refusal(space: Msa, files) -> None:  # noqa: ANN001
    before = len(space.json("ls", "--limit", "100000"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        for name, suffix, data in files:
            (folder / f"{name}{suffix}").write_bytes(data)
        result = space.runner.invoke(app, ["ingest", str(folder), "--path", str(space.space),
                                           "--json"])
    assert result.exit_code in (0, 1, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"traceback instead of a message: {result.exception!r}")
    if result.exit_code != 0:
        assert result.output.strip(), "refused without saying why"
    rows = space.json("ls", "--limit", "100000")
    assert len(rows) >= before
    assert all(r["text"].strip() for r in rows), "an empty memory was stored"
    json.dumps(rows)  # everything stored prints as valid JSON
