"""Tape errors.

    TapeError            a tape can't be read as promised; names the file and the position
    └── MalformedRecord  one record is bad (bad JSON, unknown topic, contract violation)
"""

from __future__ import annotations


class TapeError(Exception):
    def __init__(self, path: str, where: str, message: str) -> None:
        self.path, self.where, self.message = path, where, message
        super().__init__(f"{path}:{where}: {message}")


class MalformedRecord(TapeError):
    """A single record is bad; with --skip-bad the reader may continue past it."""
