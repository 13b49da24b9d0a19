"""Namespaces never cross: random sequences of every kind of call (export and import of
bundles included), against a plain model of which memory lives where (issue 16: ``get``/
``forget`` by id reached other namespaces, ``export`` took every namespace, an import landed
in the bundle's namespaces)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msa_agent import Memory
from msa_agent.errors import InvalidInputError, UnknownMemoryError

pytestmark = pytest.mark.filterwarnings("ignore::msa_agent.runtime.engine.RoutingQualityWarning")

NAMESPACES = ["a", "b", "c"]  # the handle's own is "a"; None in an op means "the handle's"
TEXTS = ["Paris is the capital of France.", "Alice works for Acme in Lisbon.",
         "Bob likes green tea.", "The quick brown fox jumps."]
KINDS = ["note", "fact"]

ns = st.sampled_from([None, *NAMESPACES])
OPS = st.one_of(
    st.tuples(st.just("remember"), st.sampled_from(TEXTS), st.sampled_from(KINDS), ns),
    st.tuples(st.just("get"), st.integers(0, 30), ns),
    st.tuples(st.just("forget_id"), st.integers(0, 30), ns),
    st.tuples(st.just("forget_where"), st.sampled_from(KINDS), ns),
    st.tuples(st.just("recall"), st.sampled_from(TEXTS), ns),
    st.tuples(st.just("list"), ns),
    st.tuples(st.just("answer"), st.sampled_from(TEXTS), ns),
    st.tuples(st.just("export"), ns),
    st.tuples(st.just("import"), ns),
)


class Model:
    """Where each memory should be: id -> (namespace, kind); ids ever made, live or not."""

    def __init__(self, folder: Path) -> None:
        self.live: dict[str, tuple[str, str]] = {}
        self.made: list[str] = []
        self.folder = folder  # where bundles are written
        self.bundles: list[tuple[Path, dict[str, str]]] = []  # path, id -> kind it holds

    def pick(self, i: int) -> str:
        return self.made[i % len(self.made)] if self.made else "no-such-id"

    def ids_in(self, namespace: str) -> set[str]:
        return {i for i, (n, _) in self.live.items() if n == namespace}


def apply(mem: Memory, model: Model, op: tuple) -> None:
    name, *args, namespace = op
    here = namespace or "a"
    if name == "remember":
        mid = mem.remember(args[0], kind=args[1], namespace=namespace)
        model.live[mid] = (here, args[1])
        model.made.append(mid)
    elif name in ("get", "forget_id"):
        mid = model.pick(args[0])
        owned = model.live.get(mid, ("", ""))[0] == here
        call = mem.get if name == "get" else mem.forget
        if not owned:
            with pytest.raises(UnknownMemoryError):
                call(mid, namespace=namespace)
        elif name == "get":
            assert call(mid, namespace=namespace).namespace == here
        else:
            assert call(mid, namespace=namespace) == 1
            del model.live[mid]
    elif name == "forget_where":
        gone = {i for i, (n, k) in model.live.items() if n == here and k == args[0]}
        assert mem.forget(where={"kind": args[0]}, namespace=namespace) == len(gone)
        for i in gone:
            del model.live[i]
    elif name == "recall":
        hits = mem.recall(args[0], k=10, namespace=namespace)
        assert {h.id for h in hits} <= model.ids_in(here)
        assert all(h.namespace == here for h in hits)
    elif name == "list":
        assert {r.id for r in mem.list(namespace=namespace, limit=None)} == model.ids_in(here)
    elif name == "export":  # the namespace's memories and no other
        dest = model.folder / f"bundle-{len(model.bundles)}"
        report = mem.export(dest, namespaces=None if namespace is None else [namespace])
        held = {i: k for i, (n, k) in model.live.items() if n == here}
        assert report.memories == len(held)
        model.bundles.append((dest, held))
    elif name == "import":  # the last bundle lands in this namespace, present ids skipped
        if not model.bundles:
            return
        src, held = model.bundles[-1]
        new = {i: k for i, k in held.items() if i not in model.live}
        assert mem.import_(src, namespace=here).imported == len(new)
        model.live.update({i: (here, k) for i, k in new.items()})
    else:
        answer = mem.answer(args[0], k=3, namespace=namespace, max_new_tokens=2)
        seen = {h.id for r in answer.rounds for h in r.memories}
        assert seen <= model.ids_in(here)


EXAMPLES = int(os.environ.get("MSA_HYPOTHESIS_EXAMPLES", "30"))  # larger for one-off runs


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(OPS, min_size=1, max_size=14))
def test_namespaces_never_cross(tiny_llama, tokenizer, ops) -> None:  # noqa: ANN001
    with tempfile.TemporaryDirectory() as tmp:
        model = Model(Path(tmp))
        with Memory.open(Path(tmp) / "m", model=(tiny_llama, tokenizer), namespace="a",
                         chunk_size=8) as mem:
            for op in ops:
                apply(mem, model, op)
            for n in NAMESPACES:  # the end state, namespace by namespace
                assert {r.id for r in mem.list(namespace=n, limit=None)} == model.ids_in(n)


def test_another_namespaces_id_is_unknown_and_untouched(tmp_path: Path, tiny_pair) -> None:
    """The issue's case: handle A cannot read or delete B's memory by id, and the error is the
    one an id that never existed gets (existence is not revealed)."""
    with Memory.open(tmp_path / "m", model=tiny_pair, namespace="A") as mem:
        theirs = mem.remember(TEXTS[0], namespace="B")
        for call in (mem.get, mem.forget):
            with pytest.raises(UnknownMemoryError) as other:
                call(theirs)
            with pytest.raises(UnknownMemoryError) as never:
                call("f" * 32)
            assert str(other.value).replace(theirs, "ID") == str(never.value).replace("f" * 32,
                                                                                     "ID")
        assert mem.get(theirs, namespace="B").text == TEXTS[0]
        assert mem.list(namespace="B")[0].id == theirs


def test_forget_refuses_an_empty_where_and_all_is_explicit(tmp_path: Path, tiny_pair) -> None:
    """``forget(where={})`` would match everything: refused, nothing deleted. ``all=True``
    empties this namespace only."""
    with Memory.open(tmp_path / "m", model=tiny_pair, namespace="A") as mem:
        mem.remember_many(TEXTS)
        other = mem.remember(TEXTS[0], namespace="B")
        for bad in ({"where": {}}, {}, {"where": {"kind": "x"}, "all": True},
                    {"all": "yes"}, {"all": 1}):
            with pytest.raises(InvalidInputError):
                mem.forget(**bad)
        assert len(mem.list()) == len(TEXTS)
        assert mem.forget(all=True) == len(TEXTS)
        assert mem.list() == [] and mem.get(other, namespace="B").id == other
        assert mem.forget(all=True, namespace="B") == 1
        assert mem.stats().memories == 0


def test_cli_show_and_forget_by_id_are_namespaced(tmp_path: Path, tiny_pair) -> None:
    """``msa show``/``msa forget`` by id look in ``--namespace`` (default: "default")."""
    from typer.testing import CliRunner

    from msa_agent.cli import app

    model_dir = tmp_path / "model"
    tiny_pair[0].save_pretrained(model_dir)
    tiny_pair[1].save_pretrained(model_dir)
    space = tmp_path / "m"
    with Memory.open(space, model=str(model_dir)) as mem:
        theirs = mem.remember(TEXTS[0], namespace="B")
    run = CliRunner().invoke
    base = ["--path", str(space)]
    assert run(app, ["show", theirs, *base]).exit_code == 1  # unknown in "default"
    assert run(app, ["forget", theirs, "--yes", *base]).exit_code == 1
    shown = run(app, ["show", theirs, "--namespace", "B", "--json", *base])
    assert shown.exit_code == 0 and TEXTS[0] in shown.stdout
    assert run(app, ["forget", theirs, "--namespace", "B", "--yes", *base]).exit_code == 0
