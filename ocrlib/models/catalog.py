"""`python -m ocrlib models`: every registered model and preset with its parameter count and input size."""
from __future__ import annotations

import pandas as pd

from ocrlib.config import load_config, presets_of
from ocrlib.errors import BadInput
from ocrlib.models import MODELS, create_model

COMPETITION_VOCAB = 245  # vocabulary size of the 2021 competition's tokens.txt


def parameter_table(vocab_size: int = COMPETITION_VOCAB) -> pd.DataFrame:
    """One row per registered model and config preset: parameter count and input size."""
    rows = []
    for name in MODELS:
        try:
            presets = [None, *presets_of(name)]
        except BadInput as err:
            rows.append(dict(model=name, preset="default", params=None, params_M=None, input=None, note=str(err)))
            continue
        for preset in presets:
            row = dict(model=name, preset=preset or "default", params=None, params_M=None, input=None, note="")
            try:
                config = load_config(name, preset)
                params = create_model(name, vocab_size, config=config.model).num_parameters()
            except (BadInput, ImportError, ValueError) as err:
                row["note"] = f"{type(err).__name__}: {err}"
            else:
                row.update(params=params, params_M=round(params / 1e6, 2),
                           input=f"{config.data.height}x{config.data.width or 'keep-aspect'}")
            rows.append(row)
    frame = pd.DataFrame(rows)
    frame["params"] = frame["params"].astype("Int64")  # missing models stay <NA>, counts stay integers
    return frame


def cli_models(args) -> int:
    from ocrlib.tables import markdown_table

    print(f"Parameters at vocabulary size {COMPETITION_VOCAB}:\n")
    print(markdown_table(parameter_table(COMPETITION_VOCAB)))
    return 0
