"""One writer per folder across processes: two notebooks (or `report --only` runs side by side) that ask for the
same run or the same built data wait for each other instead of writing into one folder at once."""
from __future__ import annotations

import contextlib
from pathlib import Path


@contextlib.contextmanager
def folder_lock(folder: Path):
    """Hold an exclusive lock on `folder` (a `.lock` file in it, created with the folder) until the block ends."""
    import fcntl  # POSIX; notebooks and `make reports` run on Linux and macOS

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
