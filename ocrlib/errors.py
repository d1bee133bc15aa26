"""Errors with a one-line message that names the file and the problem."""
from __future__ import annotations

from pathlib import Path


class BadInput(ValueError):
    """An input file (image, gt.txt, InkML, checkpoint, config) that cannot be used.

    str(err) is one line: "<path>: <problem>".
    """

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class FontsUnavailable(RuntimeError):
    """Fonts a renderer needs that this machine cannot find; the one-line message says how to fix it."""
