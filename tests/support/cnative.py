"""The C reader (streams/codec/_cread.c) as tests need it: the one the native build made, or one
compiled for the test (in a temporary directory, with extra flags such as a sanitizer's)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

from streams import _native

SOURCE = _native.source_of("streams.codec._cread")


def build(target: Path, cflags: tuple[str, ...] = (), ldflags: tuple[str, ...] = ()) -> Path:
    """Compile _cread.c into `target` (setuptools, as the native build does); the extension's path."""
    from setuptools import Extension
    from setuptools.dist import Distribution

    ext = Extension("_cread", [str(SOURCE)], extra_compile_args=["-std=c11", *cflags], extra_link_args=list(ldflags))
    dist = Distribution({"name": "cread-test", "ext_modules": [ext]})
    dist.script_args = ["-q", "build_ext", "--build-lib", str(target), "--build-temp", str(target / "o")]
    dist.parse_command_line()
    cwd = Path.cwd()
    os.chdir(target)
    try:
        dist.run_commands()
    finally:
        os.chdir(cwd)
    built, = target.glob("_cread.*.so")
    return built


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("_cread", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def module(tmp: Path) -> ModuleType:
    """The built extension when this process runs the native build, else a fresh build in `tmp`."""
    if _native.engine_build() == "compiled":
        from streams.codec import _cread  # type: ignore[attr-defined]

        return _cread  # type: ignore[no-any-return]
    return load(build(tmp))
