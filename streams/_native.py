"""The compiled engine: `streams.core`'s hot modules built with mypyc from the same source, the
codec's Avro reader and event writer in C, and the guard that only ever runs a build made from the
sources beside it.

`scripts/native.py build` (`make native`) compiles COMPILED in place: a C extension next to
each module (which Python imports in preference to the .py), one shared library for the group, and a
stamp with the SHA-256 of every source it compiled. Nothing else changes: the same code runs, as C,
with mypyc checking its type annotations at run time. It also builds C_MODULES, hand-written C with
Python twins (`streams/codec/_cavro.c` does the reads of `streams/codec/direct.py` and the writes of
`streams/codec/encoder.py`; `streams/core/_cevents.c` the event ids and constructors of
`streams/core/events.py`), used only while the build is in use. Without a build (no C
compiler, or never run), the pure-Python modules run, with the same results.

`install()` runs when `streams` is imported, before any of these modules can be: it reads the stamp,
and if any source changed since the build (an edit after `make native`, a checkout), or
DIVMON_PURE=1 is set, it makes those modules load from their .py files and says which engine runs
(`engine_build()`); a stale build is reported once on stderr, never silently used.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from types import ModuleType

# imported where used (hashlib, json, importlib.util): this module runs at every `import streams`,
# and `divmon --help` must stay light

PACKAGE_DIR = Path(__file__).resolve().parent
# the engine's modules (and serde: the worker's checkpoints; rules: the decode's contract checks), in
# import order; events.py stays interpreted: its fast constructors assign __class__, which compiled
# (native) classes don't allow
COMPILED = ("streams.core.rules", "streams.core.state", "streams.core.valuation", "streams.core.mirror",
            "streams.core.compare", "streams.core.witness", "streams.core.engine", "streams.core.serde")
GROUP = "streams.core._compiled"  # the shared library: streams/core/_compiled__mypyc.*.so
STAMP = PACKAGE_DIR / "core" / "_compiled.json"
# hand-written C extensions, each the twin of Python code that runs without the build
C_MODULES = ("streams.codec._cavro", "streams.core._cevents")
NATIVE = COMPILED + C_MODULES

_build = "pure"


def source_of(module: str, root: Path = PACKAGE_DIR.parent) -> Path:
    return root.joinpath(*module.split(".")).with_suffix(".c" if module in C_MODULES else ".py")


def digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def extensions(modules: Sequence[str], root: Path = PACKAGE_DIR.parent) -> list[Path]:
    """The compiled extension files present for `modules`."""
    out = []
    for module in modules:
        src = source_of(module, root)
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            ext = src.with_suffix(suffix)
            if ext.exists():
                out.append(ext)
    return out


def stale_sources(stamp: Path, modules: Sequence[str], root: Path = PACKAGE_DIR.parent) -> list[str]:
    """Modules the build can't serve: source changed since it was compiled, or extension missing (all of
    them without a stamp). The compiled modules call each other natively, so it is all or none."""
    import json

    try:
        built = json.loads(stamp.read_text(encoding="utf-8"))["sources"]
    except (OSError, ValueError, KeyError, TypeError):
        return list(modules)
    return [m for m in modules if built.get(m) != _digest_or_none(source_of(m, root)) or not extensions([m], root)]


def _digest_or_none(path: Path) -> str | None:
    try:
        return digest(path)
    except OSError:  # a source missing beside its build (a hand-made install): not the build's source
        return None


class _SourceFirst:
    """A meta path finder (duck-typed: importlib.abc costs ~20 ms to import) that loads the given
    modules from their .py files, skipping the extension beside them."""

    def __init__(self, modules: Sequence[str], root: Path) -> None:
        self.modules = set(modules)
        self.root = root

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.modules:
            return None
        import importlib.util

        return importlib.util.spec_from_file_location(fullname, source_of(fullname, self.root))


def decide(modules: Sequence[str] = NATIVE, root: Path = PACKAGE_DIR.parent,
           stamp: Path = STAMP) -> tuple[str, list[str]]:
    """Which engine an import would run, and the modules whose source changed since the build."""
    if not extensions(modules, root):
        return "pure", []
    if os.environ.get("DIVMON_PURE", "") not in ("", "0"):
        return "pure (DIVMON_PURE)", []
    stale = stale_sources(stamp, modules, root)
    return ("pure (stale build)" if stale else "compiled"), stale


def install(modules: Sequence[str] = NATIVE, root: Path = PACKAGE_DIR.parent, stamp: Path = STAMP) -> str:
    """Decide which engine runs (see the module doc); returns and remembers the answer. A C module
    (C_MODULES) has no .py to load instead: its Python twin checks `engine_build()` before importing it."""
    global _build
    _build, stale = decide(modules, root, stamp)
    if stale:
        print(f"divmon: the compiled engine was built from other sources ({', '.join(stale)} changed "
              "since, or missing): running the pure-Python modules; `make native` rebuilds it", file=sys.stderr)
    if _build.startswith("pure ("):
        sys.meta_path.insert(0, _SourceFirst([m for m in modules if m not in C_MODULES], root))
    return _build


def c_module(name: str = "streams.codec._cavro") -> ModuleType | None:
    """C module `name` (one of C_MODULES: the codec's by default) when this process runs the native
    build, else None: its Python twins (direct.py and encoder.py; events.py) run instead."""
    if name not in C_MODULES:
        raise ValueError(f"{name} is not one of {C_MODULES}")
    if _build != "compiled":
        return None
    import importlib

    return importlib.import_module(name)


def engine_build() -> str:
    """Which engine this process runs: 'compiled', 'pure', 'pure (stale build)' or 'pure (DIVMON_PURE)'."""
    return _build


def stamp_text(root: Path = PACKAGE_DIR.parent) -> str:
    """The stamp of a build of NATIVE from the sources under `root`: the digest of each."""
    import json

    return json.dumps({"sources": {m: digest(source_of(m, root)) for m in NATIVE}}, indent=1) + "\n"


def ext_modules(target_dir: str, opt_level: str = "3") -> list[Any]:
    """mypyc's extensions for COMPILED and those of C_MODULES, for setuptools (run from the project
    root: the paths are relative, and they name the modules). setup.py calls this with
    DIVMON_COMPILE=1 (wheels, images)."""
    from mypyc.build import mypycify
    from setuptools import Extension

    hand_written = [Extension(m, [str(source_of(m, Path()))], extra_compile_args=["-O2", "-std=c11"])
                    for m in C_MODULES]
    return mypycify([str(Path(*m.split(".")).with_suffix(".py")) for m in COMPILED], opt_level=opt_level,
                    group_name=GROUP, target_dir=target_dir) + hand_written


def missing_toolchain() -> str | None:
    """What a build would lack here (a C compiler, Python's headers, mypyc), said before spending a
    minute on type-checking and code generation; None if nothing."""
    import importlib.util
    import shutil
    import sysconfig

    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        return f"no C compiler ({cc}) on PATH"
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not headers.exists():
        return f"no Python headers ({headers}; Debian: apt-get install python3-dev)"
    if importlib.util.find_spec("mypyc") is None:
        return "no mypyc (it comes with mypy, in the dev extras)"
    return None


def build() -> None:
    """Compile COMPILED in place and write the stamp (needs mypy, from the dev extras, and a C compiler)."""
    import tempfile

    from setuptools.dist import Distribution

    missing = missing_toolchain()
    if missing:
        raise SystemExit(f"can't compile here: {missing}")
    root = PACKAGE_DIR.parent
    clean()
    cwd = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="divmon-mypyc-") as tmp:
        os.chdir(root)
        try:
            stamp = stamp_text(root)
            # a bare Distribution: setup() would also read pyproject.toml, which is for the package build
            dist = Distribution({"name": "divmon-native", "ext_modules": ext_modules(str(Path(tmp) / "c"))})
            dist.script_args = ["-q", "build_ext", "--inplace", "--build-temp", str(Path(tmp) / "o")]
            dist.parse_command_line()
            dist.run_commands()
        finally:
            os.chdir(cwd)
    if stamp_text(root) != stamp:
        clean()
        raise SystemExit("sources changed during the build: build again")
    STAMP.write_text(stamp, encoding="utf-8")


def clean() -> list[Path]:
    """Remove the compiled modules, the shared library and the stamp; returns what was removed."""
    core = PACKAGE_DIR / "core"
    gone = extensions(NATIVE) + [p for p in core.glob("_compiled__mypyc.*") if p.is_file()]
    if STAMP.exists():
        gone.append(STAMP)
    for p in gone:
        p.unlink()
    return gone


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="scripts/native.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("build", "clean", "status"), help="build in place, remove, or "
                        "say which engine an import would run")
    parser.add_argument("--optional", action="store_true", help="build: if it can't be built here (no C "
                        "compiler or Python headers), say why and exit 0: the pure-Python engine runs")
    parser.add_argument("--expect", metavar="ENGINE", help="status: exit 1 unless the engine is this one "
                        "(e.g. compiled)")
    args = parser.parse_args(argv)
    if args.action == "build":
        try:
            build()
        except (Exception, SystemExit) as exc:  # setuptools exits on compiler errors
            if not args.optional:
                raise
            clean()
            print(f"no compiled engine ({type(exc).__name__}: {exc}); the pure-Python modules run",
                  file=sys.stderr)
        else:
            print(f"compiled {len(COMPILED)} modules with mypyc: {', '.join(COMPILED)}; and {', '.join(C_MODULES)}")
    elif args.action == "clean":
        print(f"removed {len(clean())} files")
    engine = decide()[0]
    print(f"engine: {engine}")
    if args.expect is not None and engine != args.expect:
        print(f"expected engine {args.expect!r}, found {engine!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
