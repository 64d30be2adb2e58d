"""The hand-written C extensions (`streams._native.C_MODULES`: streams/codec/_cavro.c,
streams/core/_cevents.c) as
tests need them: the one the native build made, or one compiled for the test (in a temporary
directory, with extra flags such as a sanitizer's)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from streams import _native


def dotted(name: str) -> str:
    """The full name of C module `name` ("_cavro" -> "streams.codec._cavro")."""
    full, = (m for m in _native.C_MODULES if m.rsplit(".", 1)[1] == name)
    return full


def build(name: str, target: Path, cflags: tuple[str, ...] = (), ldflags: tuple[str, ...] = ()) -> Path:
    """Compile C module `name` (e.g. "_cavro") into `target` with setuptools, as the native build
    does; the extension's path."""
    from setuptools import Extension
    from setuptools.dist import Distribution

    source = _native.source_of(dotted(name))
    ext = Extension(name, [str(source)], extra_compile_args=["-std=c11", *cflags], extra_link_args=list(ldflags))
    dist = Distribution({"name": f"{name}-test", "ext_modules": [ext]})
    dist.script_args = ["-q", "build_ext", "--build-lib", str(target), "--build-temp", str(target / "o")]
    dist.parse_command_line()
    cwd = Path.cwd()
    os.chdir(target)
    try:
        dist.run_commands()
    finally:
        os.chdir(cwd)
    built, = target.glob(f"{name}.*.so")
    return built


def load(path: Path) -> ModuleType:
    """The extension at `path`, imported under its own name (outside the package)."""
    spec = importlib.util.spec_from_file_location(path.name.split(".")[0], path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def module(name: str, tmp: Path) -> ModuleType:
    """C module `name` (e.g. "_cavro": `streams.codec._cavro`) when this process runs the native build,
    else a fresh build in `tmp`."""
    built = _native.c_module(dotted(name))
    return built if built is not None else load(build(name, tmp))


ROOT = Path(__file__).resolve().parents[2]


def run_under_asan(name: str, tmp: Path, probe: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run Python code `probe` (`python -c probe EXTENSION ROOT *args`) with C module `name` compiled
    under AddressSanitizer and every Python allocation on the sanitized malloc, so that any read or
    write outside a buffer aborts the process with a report on stderr."""
    libasan = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True,
                             check=True).stdout.strip()
    assert Path(libasan).is_file(), f"gcc has no AddressSanitizer runtime ({libasan})"
    ext = build(name, tmp, cflags=("-O1", "-g", "-fsanitize=address", "-fno-omit-frame-pointer"),
                ldflags=("-fsanitize=address",))
    env = {"PATH": "/usr/bin:/bin", "LD_PRELOAD": libasan, "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
           "PYTHONMALLOC": "malloc", "DIVMON_PURE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-c", probe, str(ext), str(ROOT), *args], env=env, check=False,
                          capture_output=True, text=True, timeout=600)
