"""An in-memory state store for pipelines driven without Faust (tests, bench/pipeline_bench.py)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping


class DictStore:
    """A state store that survives a pipeline (like a changelog-backed table does)."""

    def __init__(self) -> None:
        self.data: dict[int, dict[str, bytes]] = defaultdict(dict)

    def rows(self, partition: int) -> Iterable[bytes]:
        return list(self.data[partition].values())

    def write(self, partition: int, rows: Mapping[str, bytes]) -> list[object]:
        self.data[partition].update(rows)
        return []
