"""Plot helpers: a grid of images with titles shortened line by line, a run's validation curves."""
import json

import matplotlib.pyplot as plt
import numpy as np
import pytest

from ocrlib.viz import image_grid, training_log, validation_curves


def test_image_grid_keeps_every_title_line_and_shortens_long_ones():
    images = [np.full((20, 60), 255, np.uint8) for _ in range(3)]
    titles = ["gt: " + "x " * 100 + "\npred: y", "short", "a\nb"]
    fig = image_grid(images, titles, ncols=2, cell=(3.0, 1.0))
    shown = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(fig.axes) == 4 and len(shown) == 3
    first = shown[0].splitlines()
    assert first[1] == "pred: y" and first[0].endswith("...") and len(first[0]) == 45
    assert shown[1:] == ["short", "a\nb"]


def test_confusion_heatmap_returns_an_axes_with_token_labels():
    import matplotlib.pyplot as plt
    import pandas as pd

    from ocrlib.metrics import token_confusion
    from ocrlib.viz import confusion_heatmap

    frame = pd.DataFrame({"gt": ["x + y", "a + b", r"\alpha = 1"], "pred": ["x - y", "a - b", "a = 1"]})
    ax = confusion_heatmap(token_confusion(frame, top_k=4))
    assert isinstance(ax, plt.Axes) and ax.get_xlabel() == "predicted"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["+", "-", r"\alpha", "a"]
    plt.close(ax.figure)
    empty = confusion_heatmap(token_confusion(frame.iloc[:0]))
    assert isinstance(empty, plt.Axes) and empty.texts[0].get_text() == "no substitutions"
    plt.close(empty.figure)


def _write_log(folder, lines):
    folder.mkdir()
    (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


def test_training_log_splits_the_validated_steps_and_curves_plot_them(tmp_path):
    run = _write_log(tmp_path / "run", [{"step": 10, "elapsed_s": 60.0, "loss": 5.0},
                                        {"step": 20, "elapsed_s": 120.0, "loss": 4.0, "val_sa": 0.1, "val_wer": 0.8},
                                        {"step": 30, "elapsed_s": 240.0, "loss": 3.0, "val_sa": 0.3, "val_wer": 0.6}])
    bare = _write_log(tmp_path / "bare", [{"step": 10, "elapsed_s": 60.0, "loss": 5.0}])  # no validation yet
    log, val = training_log(run)
    assert list(log["step"]) == [10, 20, 30] and list(val["step"]) == [20, 30]
    assert training_log(bare)[1].empty and np.isnan(training_log(bare)[1]["val_sa"].max())
    fig, axes = plt.subplots(1, 2)
    validation_curves(axes[0], {"run": run, "bare": bare})
    validation_curves(axes[1], {"run": run}, x="step", y="val_wer", ylabel="WER")
    minutes, sa = axes[0].lines[0].get_data()
    assert np.allclose(minutes, [2.0, 4.0]) and np.allclose(sa, [0.1, 0.3]) and len(axes[0].lines[1].get_xdata()) == 0
    assert [t.get_text() for t in axes[0].get_legend().get_texts()] == ["run", "bare"]
    assert list(axes[1].lines[0].get_xdata()) == [20, 30] and np.allclose(axes[1].lines[0].get_ydata(), [0.8, 0.6])
    assert axes[1].get_title() == "validation WER against steps" and axes[1].get_legend() is None
    with pytest.raises(ValueError, match="'minutes' or 'step'"):
        validation_curves(axes[0], {"run": run}, x="steps")
    plt.close(fig)
