"""The shipped pretrained model (ocrlib/pretrained): small, safe to load, and it reads formulas it never saw.

The formulas below are typed here (not drawn from the training data) and rendered by mathtext on the spot, so
the check needs neither ../shared nor a GPU. It goes through `ocrlib predict` with no --checkpoint, as a user on
a fresh clone would. They are the 17 of 20 typed candidates that the shipped model read exactly when it was
shipped (MODEL_CARD.md lists all 20): a regression check of the file and its loading, not a score.
"""
import json

import pytest
import torch
from PIL import Image

from ocrlib.checkpoints import read_checkpoint
from ocrlib.cli import main
from ocrlib.data.render import render_one
from ocrlib.pretrained import MAX_BYTES, MODEL_CARD, WEIGHTS
from ocrlib.tokens import normalize_latex

pytestmark = pytest.mark.skipif(not WEIGHTS.is_file(), reason="no shipped model in ocrlib/pretrained/")

# candidate number (it seeds the mathtext font and size) -> LaTeX: 20 short formulas typed by hand
CANDIDATES = {0: r"x^{2}+1", 1: r"f(x)=2x+1", 2: r"\frac{1}{2}", 3: r"a_{n}", 4: r"\sin x", 5: r"y=kx+b",
              6: r"x\in R", 7: r"\sqrt{3}", 8: r"a+b=c", 9: r"2x-3y=0", 10: r"S_{n}", 11: r"x>0", 12: r"\angle A",
              13: r"g(x)", 14: r"\left| x \right|", 15: r"\frac{a}{b}", 16: r"x^{2}-4x+3=0", 17: r"\cos 2x",
              18: r"\pi", 19: r"\{a_{n}\}"}
# those the shipped model read exactly when it was shipped (MODEL_CARD.md)
KNOWN = {i: CANDIDATES[i] for i in (0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 13, 15, 16, 17, 18)}


def test_the_shipped_model_is_small_fp16_and_has_a_card():
    assert WEIGHTS.stat().st_size <= MAX_BYTES
    state = read_checkpoint(WEIGHTS)
    assert {v.dtype for v in state["model"].values() if v.is_floating_point()} == {torch.float16}
    assert "optimizer" not in state
    card = MODEL_CARD.read_text()
    for section in ("## Command", "## Data", "## Budget and device", "## Scores"):
        assert section in card, f"the model card has no '{section}' section"


def test_predict_without_checkpoint_reads_formulas_typed_here(tmp_path, capsys):
    paths = {}
    for index, latex in KNOWN.items():
        paths[index] = tmp_path / f"{index:02d}.png"
        Image.fromarray(render_one(latex, "mathtext", seed=0, index=index)).save(paths[index])
    assert main(["predict", "--format", "jsonl", *map(str, paths.values())]) == 0
    read = {line["path"]: line["tokens"] for line in map(json.loads, capsys.readouterr().out.splitlines())}
    for index, latex in KNOWN.items():
        assert read[str(paths[index])] == normalize_latex(latex), latex
