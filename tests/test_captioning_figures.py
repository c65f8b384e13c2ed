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


def test_examples_with_the_scene_truth_and_the_contrast_choice():
    from rlcv_lib.tasks.captioning import judge
    from rlcv_lib.tasks.captioning import tune as ct

    cfg = get_config("smoke")
    full = ev.load_split(cfg, "test", 16)
    keep = [i for i, t in enumerate(ct.truths_of(cfg, full)) if t][:4]
    split = ev.Split("test", [full.examples[i] for i in keep],
                     {k: v[keep] for k, v in full.batch.items()})
    truths = ct.truths_of(cfg, split)
    named = [judge.describe_truth(t).split(", ")[0] for t in truths]  # "colour shape"
    before = Decoded(["no shapes"] * 4, np.zeros(4, np.float32))
    # image 0: CIDEr-D up and F1 up; image 1: CIDEr-D up most, F1 down (names a wrong thing);
    # image 2: CIDEr-D down; image 3: unchanged
    wrong = "one green star" if "green star" not in named[1] else "one red cross"
    after = Decoded([f"a {named[0]}", wrong, "x", "no shapes"],
                    np.array([0.5, 0.9, -1.0, 0.0], np.float32))
    before = Decoded([before.captions[0], f"a {named[1]}", "a", "no shapes"],
                     before.reward)
    assert cfig.contrast_indices(before, after, truths, 3) == [1, 0, 3]
    assert cfig.contrast_indices(before, after, truths, 9) == [1, 0, 3, 2]
    assert cfig.contrast_indices(before, after, truths, 1) == [1]
    rows = cfig.example_rows(split, {"MLE": before, "LOO": after}, [0, 1], truths)
    assert rows[0]["scene"] == judge.describe_truth(truths[0])
    assert rows[0]["LOO F1"] > rows[0]["MLE F1"] and rows[1]["LOO F1"] < rows[1]["MLE F1"]
    fig = cfig.draw_examples(split, {"LOO": after}, [0], truths=truths)
    assert "truth: " in fig.axes[0].get_title(loc="left")
