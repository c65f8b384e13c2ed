"""Panoptic's figures (tasks/panoptic/figures.py) draw what they are given."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402

from rlcv_lib.tasks.panoptic import figures as pf  # noqa: E402

CATS = [{"id": 1, "color": (255, 0, 0)}, {"id": 2, "color": (0, 0, 255)}]


def test_render_colours_segments_by_category_and_outlines_the_flagged():
    m = np.zeros((6, 6), np.int32)
    m[:, :3], m[:, 3:] = 1, 2
    image = pf.render_segments(m, np.array([2, 2]), CATS)
    np.testing.assert_allclose(image[0, 0], [0, 0, 1])  # category 2, first instance
    np.testing.assert_allclose(image[0, 5], [0, 0, 0.7])  # its second instance, darker
    assert image[0, 2, 2] < 1  # the boundary is dark
    flagged = pf.render_segments(m, np.array([2, 2]), CATS, outline=np.array([False, True]))
    np.testing.assert_allclose(flagged[0, 3], pf.INCOHERENT_RGB)
    np.testing.assert_allclose(flagged[0, 2], image[0, 2])
    void = pf.render_segments(np.zeros((2, 2), np.int32), np.zeros(1, np.int32), CATS)
    assert void.max() == 0


def test_before_after_titles_each_panel_with_its_pq():
    gt_map = np.ones((2, 4, 4), np.int32)
    gt = {"gt_map": gt_map, "gt_category": np.array([[1], [1]]),
          "gt_crowd": np.zeros((2, 1), bool), "gt_area": np.full((2, 1), 16.0)}
    wrong = (gt_map, np.array([[2], [2]]))
    fig = pf.before_after_figure(np.zeros((2, 4, 4, 3)), {"truth": (gt_map, gt["gt_category"]),
                                                          "wrong": wrong}, gt, [0, 1], CATS)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[1] == "truth\nPQ 1.00 · 1 seg · 0 inc." and titles[2].startswith("wrong\nPQ 0.00")
    assert len(fig.axes) == 6


def test_sizes_and_curve_figures():
    row = {"model": "MLE", "decoding": "greedy", **{f"{w}_{s}": 1.0 for w in
                                                      ("segments", "incoherent")
                                                      for s in ("small", "medium", "large")}}
    fig = pf.sizes_figure([row], ["MLE, greedy"])
    assert len(fig.axes) == 2 and len(fig.axes[0].patches) == 3
    curve = [{"step": s, "reward_sampled": 0.1 * s, "pq": 0.2 * s} for s in range(3)]
    fig = pf.reward_metric_figure(curve, 2, 1.0)
    assert fig.axes[0].get_title() == "Pearson r = 1.00" and len(fig.axes[0].lines) == 3
