"""Captioning's example tables and figure."""

import numpy as np

from rlcv_lib.config import get_config
from rlcv_lib.core import evaluate as ev
from rlcv_lib.tasks.captioning import figures as cfig
from rlcv_lib.tasks.captioning.metrics import Decoded


def test_example_rows_and_figure_show_each_model_on_the_same_images():
    split = ev.load_split(get_config("smoke"), "test", 3)
    decoded = {"MLE": Decoded(["a", "b", "c"], np.array([0.1, 0.2, 0.3], np.float32)),
               "LOO": Decoded(["x", "y", "z"], np.array([1.0, 2.0, 3.0], np.float32))}
    rows = cfig.example_rows(split, decoded, [2, 0])
    assert [r["image"] for r in rows] == [2, 0]
    assert rows[0]["reference"] == split.examples[2]["captions"][0]
    assert (rows[0]["MLE"], rows[0]["LOO"]) == ("c", "z")
    assert rows[1]["LOO CIDEr-D"] == 1.0 and list(rows[0]) == [
        "image", "reference", "MLE", "MLE CIDEr-D", "LOO", "LOO CIDEr-D"]
    fig = cfig.draw_examples(split, decoded, [2, 0])
    assert len(fig.axes) == 2
    title = fig.axes[0].get_title(loc="left")
    assert "MLE: c" in title and "LOO: z" in title and title.startswith("ref: ")
