"""Atomic ``Space.create`` and crash-proof scratch folders (issue 16, item 5)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from store_helpers import FP, SPECS

from msa_agent.store import Space, SpaceExistsError, SpaceLockedError
from msa_agent.store import space as space_mod
from msa_agent.store.scratch import PREFIX, clean_stale, note, remove_owner_last, scratch_dir

HERE = Path(__file__).parent


def _race(monkeypatch: pytest.MonkeyPatch, target: Path) -> None:
    """The next ``_build`` lets a "winner" create ``target`` right after building ours."""
    real, raced = space_mod._build, []

    def racing(path: Path, *a: object) -> None:
        real(path, *a)
        if not raced:
            raced.append(True)
            Space.create(target, FP, SPECS, durable=False).close()

    monkeypatch.setattr(space_mod, "_build", racing)


def test_losing_creator_gets_a_clear_error(space_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    _race(monkeypatch, space_path)
    with pytest.raises(SpaceExistsError, match="another process"):
        Space.create(space_path, FP, SPECS, durable=False)
    Space.open(space_path, FP).close()  # the winner's space is whole
    assert not list(space_path.parent.glob(f"{PREFIX}*"))


def test_losing_open_or_create_opens_the_winners(space_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _race(monkeypatch, space_path)
    with Space.open_or_create(space_path, FP, SPECS, durable=False) as s:
        assert s.count() == 0 and not s.read_only


def test_create_into_an_empty_folder(space_path: Path) -> None:
    space_path.mkdir()
    with Space.create(space_path, FP, SPECS, durable=False) as s:
        assert s.count() == 0
    assert sorted(p.name for p in space_path.iterdir()) == [".lock", "arrays.zarr",
                                                            "meta.sqlite"]


RACER = """
import sys
sys.path.insert(0, {here!r})
from store_helpers import FP, SPECS
from msa_agent.store import Space, StoreError
try:
    Space.open_or_create({path!r}, FP, SPECS, durable=False).close()
    print("ok")
except StoreError as e:
    print(type(e).__name__)
"""


def test_two_processes_creating_one_path(tmp_path: Path) -> None:
    """Each of two racing creators opens the space or is told it is locked; the space is
    always whole (the loser used to get StoreCorruptedError)."""
    for i in range(4):
        path = tmp_path / f"s{i}"
        code = RACER.format(here=str(HERE), path=str(path))
        procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                  text=True) for _ in range(2)]
        outs = [p.communicate()[0].strip() for p in procs]
        assert set(outs) <= {"ok", SpaceLockedError.__name__}, outs
        assert "ok" in outs
        Space.open(path, FP).close()


def test_stale_scratch_is_removed_live_scratch_kept(tmp_path: Path) -> None:
    dead = tmp_path / f"{PREFIX}export-dead"
    dead.mkdir()
    (dead / ".owner").touch()  # its process is gone: nobody holds the lock
    (dead / "memories.jsonl").write_text("a copy of forgotten text")
    with scratch_dir(tmp_path, "import") as live:
        assert clean_stale(tmp_path) == 1
        assert live.is_dir() and not dead.exists()
    assert not live.exists()


def test_space_open_cleans_referenced_scratch(tmp_path: Path) -> None:
    """An export's scratch lives beside the bundle; the space points to it, and the next
    open of the space removes it once its exporter is gone."""
    Space.create(tmp_path / "space", FP, SPECS, durable=False).close()
    out = tmp_path / "out"
    out.mkdir()
    with scratch_dir(out, "export") as tmp, note(tmp_path / "space", tmp):
        assert list((tmp_path / "space").glob(f"{PREFIX}*"))
    assert not list((tmp_path / "space").glob(f"{PREFIX}*"))  # normal exit: nothing left
    dead = out / f"{PREFIX}export-killed"
    dead.mkdir()
    (dead / ".owner").touch()
    (tmp_path / "space" / f"{PREFIX}{dead.name}.ref").write_text(str(dead))
    Space.open(tmp_path / "space", FP).close()
    assert not dead.exists()
    assert not list((tmp_path / "space").glob(f"{PREFIX}*"))


def test_a_noted_scratch_folder_goes_before_its_reference(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A kill between the two steps of leaving ``note`` must not leave a scratch folder that
    the space no longer points to (the crash harness's export trial found one)."""
    space, out = tmp_path / "space", tmp_path / "out"
    space.mkdir()
    out.mkdir()
    seen: list[bool] = []
    real_unlink = Path.unlink

    def unlink(self: Path, missing_ok: bool = False) -> None:
        if self.name.endswith(".ref"):
            seen.append(Path(self.read_text()).exists())  # is the folder still there?
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    with scratch_dir(out, "export") as tmp, note(space, tmp):
        (tmp / "bundle").mkdir()
        (tmp / "bundle" / "part").write_text("copy of a memory")
    assert seen == [False]
    assert not list(out.iterdir()) and not list(space.iterdir())


def test_scratch_is_removed_with_its_owner_file_last(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed part way through removing, a scratch folder keeps its owner file, so the next
    clean removes it at once (a folder without one waits out a grace period)."""
    folder = tmp_path / f"{PREFIX}export-x"
    (folder / "bundle").mkdir(parents=True)
    for name in (".owner", "a.zip", "bundle/part"):
        (folder / name).write_text("x")
    gone: list[str] = []
    real_unlink = Path.unlink

    def unlink(self: Path, missing_ok: bool = False) -> None:
        gone.append(self.name)
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    remove_owner_last(folder)
    assert gone == ["a.zip"] and not folder.exists()  # the owner went with the folder, last


def test_scratch_without_owner_is_kept_for_a_grace_period(tmp_path: Path) -> None:
    fresh = tmp_path / f"{PREFIX}create-new"
    fresh.mkdir()
    assert clean_stale(tmp_path) == 0 and fresh.exists()  # its creator may be starting
    os.utime(fresh, (0, 0))
    assert clean_stale(tmp_path) == 1 and not fresh.exists()
