"""Colorization's figures (tasks/colorization/figures.py) draw what they are given."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402

from rlcv_lib.tasks.colorization import figures as cf  # noqa: E402


def test_to_unit_maps_and_clips():
    np.testing.assert_allclose(cf.to_unit(np.array([-1.0, 0.0, 1.0, 3.0])), [0, 0.5, 1, 1])


def test_before_after_titles_each_column_with_its_colourfulness():
    grey = np.zeros((2, 4, 4, 3), np.float32)
    red = grey.copy()
    red[:, :2, :, 0] = 1
    fig = cf.before_after_figure({"grey": grey, "red": red}, [0, 1])
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "grey\nM = 0.00" and titles[1].startswith("red\nM = ")
    assert len(fig.axes) == 4

