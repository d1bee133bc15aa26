"""The shared markdown-table writer: header, alignment, number formats, blanks and escapes."""
import numpy as np
import pandas as pd

from ocrlib.tables import markdown_table


def test_markdown_table_aligns_numbers_right_and_formats_them():
    frame = pd.DataFrame({"model": ["satrn", "srn"], "params": pd.array([1234567, None], dtype="Int64"),
                          "params_M": [1.234567, np.nan], "ok": [True, False]})
    lines = markdown_table(frame).splitlines()
    assert lines[0] == "| model | params | params_M | ok |"
    assert lines[1] == "|---|---:|---:|---|"  # bools are not numbers
    assert lines[2] == "| satrn | 1234567 | 1.235 | True |"
    assert lines[3] == "| srn |  |  | False |"  # missing values stay blank


def test_markdown_table_index_per_column_formats_and_escapes():
    frame = pd.DataFrame({"value": [532.31], "rate": [0.5], "token": [r"\|"]},
                         index=pd.Index(["mathtext"], name="case"))
    lines = markdown_table(frame, index=True, floatfmt={"value": ".1f"}).splitlines()
    assert lines[0] == "| case | value | rate | token |" and lines[1] == "|---|---:|---:|---|"
    assert lines[2] == r"| mathtext | 532.3 | 0.5 | \\| |"  # a '|' inside a cell must not end it
    assert markdown_table(frame[["rate"]], floatfmt=".3f").splitlines()[2] == "| 0.500 |"
