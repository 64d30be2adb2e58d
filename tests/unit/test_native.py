"""The compiled-engine guard (streams/_native.py): a build runs only with the sources it was made
from; otherwise, or with DIVMON_PURE=1, the .py modules load, and the process says which it runs."""

from __future__ import annotations

import importlib
import importlib.machinery
import json
import sys
from pathlib import Path

import pytest

from streams import _native

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


@pytest.fixture
def fake(tmp_path: Path) -> tuple[Path, Path]:
    """A package `fakepkg.mod` whose 'compiled' module is garbage: importing it would fail."""
    pkg = tmp_path / "fakepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text("WHERE = 'source'\n")
    (pkg / f"mod{SUFFIX}").write_bytes(b"not an ELF file")
    return tmp_path, tmp_path / "stamp.json"


def write_stamp(stamp: Path, root: Path) -> None:
    stamp.write_text(json.dumps({"sources": {"fakepkg.mod": _native.digest(root / "fakepkg" / "mod.py")}}))


def test_a_build_counts_only_with_the_sources_it_was_made_from(fake: tuple[Path, Path],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    root, stamp = fake
    monkeypatch.delenv("DIVMON_PURE", raising=False)
    assert _native.decide(["fakepkg.mod"], root, stamp) == ("pure (stale build)", ["fakepkg.mod"])  # no stamp
    write_stamp(stamp, root)
    assert _native.decide(["fakepkg.mod"], root, stamp) == ("compiled", [])
    (root / "fakepkg" / "mod.py").write_text("WHERE = 'edited'\n")
    assert _native.decide(["fakepkg.mod"], root, stamp) == ("pure (stale build)", ["fakepkg.mod"])
    monkeypatch.setenv("DIVMON_PURE", "1")
    assert _native.decide(["fakepkg.mod"], root, stamp) == ("pure (DIVMON_PURE)", [])
    (root / "fakepkg" / f"mod{SUFFIX}").unlink()
    assert _native.decide(["fakepkg.mod"], root, stamp) == ("pure", [])


def test_a_stale_build_is_said_once_and_the_source_module_loads(fake: tuple[Path, Path],
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    root, stamp = fake
    write_stamp(stamp, root)
    (root / "fakepkg" / "mod.py").write_text("WHERE = 'edited'\n")
    monkeypatch.delenv("DIVMON_PURE", raising=False)
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(_native, "_build", _native.engine_build())
    assert _native.install(["fakepkg.mod"], root, stamp) == "pure (stale build)"
    assert "fakepkg.mod changed since" in capsys.readouterr().err
    try:
        assert importlib.import_module("fakepkg.mod").WHERE == "edited"  # not the (broken) extension
    finally:
        sys.modules.pop("fakepkg.mod", None)
        sys.modules.pop("fakepkg", None)


def test_the_engine_this_process_runs_is_the_one_it_reports() -> None:
    from streams.core import engine

    build = _native.engine_build()
    assert build == _native.decide()[0]
    assert engine.__file__ is not None
    assert engine.__file__.endswith(SUFFIX if build == "compiled" else ".py"), (build, engine.__file__)
