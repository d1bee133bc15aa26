"""One markdown-table writer for every report (metrics, benchmarks, model parameter counts).

pandas' `DataFrame.to_markdown` needs tabulate, which we do not ship; this is the small part of it we use.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd


def _cell(value, fmt: str) -> str:
    if pd.api.types.is_scalar(value) and pd.isna(value):
        return ""  # missing values (NaN, None, <NA>) stay blank rather than print 'nan'
    if isinstance(value, (float, np.floating)):
        text = format(value, fmt)
    else:
        text = str(value)
    # a '|' would end the cell (LaTeX tokens such as \| or | do occur); a newline would end the row
    return text.replace("|", r"\|").replace("\n", " ")


def _numeric(values) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def markdown_table(frame: pd.DataFrame, index: bool = False, floatfmt: str | Mapping[str, str] = ".4g") -> str:
    """A GitHub markdown table of `frame`, numeric columns right-aligned.

    index: write the index as the first column (headed by its name). floatfmt: a format spec for float
    cells, or {column: spec} (other columns keep the default '.4g'); integers are written as they are.
    """
    columns = [str(c) for c in frame.columns]
    formats = {c: floatfmt.get(c, ".4g") if isinstance(floatfmt, Mapping) else floatfmt for c in columns}
    header, numeric = columns, [_numeric(frame[c]) for c in frame.columns]
    if index:
        header, numeric = [str(frame.index.name or "")] + header, [_numeric(frame.index)] + numeric
    lines = ["| " + " | ".join(_cell(h, "") for h in header) + " |",
             "|" + "|".join("---:" if right else "---" for right in numeric) + "|"]
    for row in frame.itertuples(index=index, name=None):  # per-column types survive (an int column stays int)
        fmts = ([".4g"] if index else []) + [formats[c] for c in columns]
        lines.append("| " + " | ".join(_cell(v, f) for v, f in zip(row, fmts)) + " |")
    return "\n".join(lines)
