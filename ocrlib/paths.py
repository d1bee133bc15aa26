"""Project paths, rooted at the repository; never chdir."""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT / "data"
RUNS_DIR = PROJECT_ROOT / "runs"
REPORTS_DIR = PROJECT_ROOT / "reports"
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
CONFIGS_DIR = Path(__file__).resolve().parent / "configs"


def shared_data_root() -> Path | None:
    """The real-data folder: $OCRLIB_SHARED_DATA when set (only it), else ../shared/data beside the repo;
    None when absent."""
    env = os.environ.get("OCRLIB_SHARED_DATA")
    path = Path(env) if env else PROJECT_ROOT.parent / "shared" / "data"
    return path if path.is_dir() else None


def exam_formulas_file() -> Path | None:
    """The real printed-math LaTeX corpus, or None when it is not beside the project."""
    root = shared_data_root()
    path = root / "formulas" / "exam_math_formulas.txt" if root else None
    return path if path and path.is_file() else None


def crohme_inkml_dir() -> Path | None:
    """The CROHME InkML folder (one sub-folder per source), or None."""
    root = shared_data_root()
    path = root / "crohme" / "inkml" if root else None
    return path if path and path.is_dir() else None
