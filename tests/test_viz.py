"""Plot helpers: a grid of images with titles shortened line by line."""
import numpy as np

from ocrlib.viz import image_grid


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
