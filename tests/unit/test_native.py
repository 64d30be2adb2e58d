"""The compiled-engine guard (streams/_native.py): a build runs only with the sources it was made
from; otherwise, or with DIVMON_PURE=1, the .py modules load, and the process says which it runs."""

from __future__ import annotations

import importlib
import importlib.machinery
import json
import os
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
    (root / "fakepkg" / "mod.py").write_text("WHERE = 'source'\n")
    (root / "fakepkg" / "other.py").write_text("")
    both = ["fakepkg.mod", "fakepkg.other"]
    stamp.write_text(json.dumps({"sources": {m: _native.digest(_native.source_of(m, root)) for m in both}}))
    # a partial build (one extension missing) is not run either: compiled modules call each other natively
    assert _native.decide(both, root, stamp) == ("pure (stale build)", ["fakepkg.other"])
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


def test_a_build_without_a_compiler_says_so_before_starting(monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    missing = _native.missing_toolchain()
    assert missing is not None and missing.startswith("no C compiler")
    with pytest.raises(SystemExit, match="can't compile here: no C compiler"):
        _native.build()


def test_the_engine_this_process_runs_is_the_one_it_reports() -> None:
    from streams.core import engine

    build = _native.engine_build()
    assert build == _native.decide()[0]
    assert engine.__file__ is not None
    assert engine.__file__.endswith(SUFFIX if build == "compiled" else ".py"), (build, engine.__file__)


@pytest.mark.slow
def test_a_compiled_wheel_runs_its_compiled_engine(tmp_path: Path) -> None:
    """The image's build path (Dockerfile): DIVMON_COMPILE=1 builds a wheel whose engine modules are
    compiled, with their sources and the stamp; installed elsewhere, it runs the compiled engine and
    the same events as this checkout on a scenario tape."""
    import shutil
    import subprocess

    root = Path(__file__).resolve().parents[2]
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(root / name, src / name)
    shutil.copytree(root / "schemas", src / "schemas")
    shutil.copytree(root / "streams", src / "streams", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "_compiled.json"))
    env = {**os.environ, "DIVMON_COMPILE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "wheels"), str(src)],
                   cwd=src, env=env, check=True, capture_output=True)
    wheel, = (tmp_path / "wheels").glob("divmon-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(tmp_path / "site"), str(wheel)], env=env,
                   check=True, capture_output=True)
    for module in _native.C_MODULES:  # each hand-written C module, built, with the source its stamp names
        site = tmp_path / "site"
        assert _native.extensions([module], site) and _native.source_of(module, site).is_file(), module
    probe = ("import json, sys; import streams; from streams._native import engine_build\n"
             "import streams.core.engine as e\n"
             "from streams.tapes import replay\n"
             "from streams.core.params import EngineConfig\n"
             "r = replay.run(replay.merge([replay.open_tape(replay.Path(sys.argv[1]))]), EngineConfig())\n"
             "final = sorted(json.dumps(ev.to_dict(), sort_keys=True) for ev in r.final_events())\n"
             "print(json.dumps([engine_build(), e.__file__, final]))")
    from streams.sim import SimConfig, simulate
    from streams.sim.writers import write_tape

    tape = tmp_path / "day.jsonl"
    write_tape(simulate(SimConfig(seed=3, accounts=30, duration_ms=600_000)), tape)
    clean_env = {k: v for k, v in os.environ.items() if k not in ("DIVMON_PURE", "PYTHONPATH")}
    runs = [json.loads(subprocess.run([sys.executable, "-c", probe, str(tape)], cwd=tmp_path, check=True,
                                      capture_output=True, text=True, env={**clean_env, **extra}).stdout)
            for extra in ({"PYTHONPATH": str(tmp_path / "site")}, {"PYTHONPATH": str(root), "DIVMON_PURE": "1"})]
    (build, path, ids), (here, _, ids_here) = runs
    assert build == "compiled" and path.startswith(str(tmp_path / "site")) and path.endswith(SUFFIX)
    assert here == "pure (DIVMON_PURE)"
    assert ids == ids_here and ids
