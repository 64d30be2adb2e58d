"""The package build (metadata is in pyproject.toml). With DIVMON_COMPILE=1, the engine's hot modules
are also compiled with mypyc into the wheel, with the codec's C module (streams/_native.py; the
Dockerfile does this); that needs
mypy and a C compiler in the build environment, e.g.:

    pip install 'setuptools>=77' wheel mypy && DIVMON_COMPILE=1 pip install --no-build-isolation .
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
ext_modules: list[Any] = []
cmdclass: dict[str, Any] = {}

if os.environ.get("DIVMON_COMPILE") == "1":
    sys.path.insert(0, str(ROOT))
    from streams import _native

    class BuildPyWithStamp(build_py):
        """Puts the build's stamp in the wheel (never in the source tree, which may hold its own build)."""

        def run(self) -> None:
            super().run()
            target = Path(self.build_lib) / _native.STAMP.relative_to(_native.PACKAGE_DIR.parent)
            target.write_text(_native.stamp_text(ROOT), encoding="utf-8")

    ext_modules = _native.ext_modules(target_dir="build/mypyc")
    cmdclass = {"build_py": BuildPyWithStamp}

setup(ext_modules=ext_modules, cmdclass=cmdclass)
