"""Build, remove or inspect the compiled engine (see streams/_native.py): `make native`, `make pure`.

    .venv/bin/python scripts/native.py build|clean|status
"""

from __future__ import annotations

import sys

from streams import _native

if __name__ == "__main__":
    sys.exit(_native.main())
