"""UViM's shared figures (tasks/uvim/figures.py) draw what they are given."""

import matplotlib

matplotlib.use("Agg")

from rlcv_lib.tasks.uvim import figures as uf  # noqa: E402


def test_tuning_curves_one_panel_per_metric():
    curve = [{"model": m, "step": s, "a": s, "b": -s} for m in ("x", "y") for s in (0, 10)]
    fig = uf.tuning_curves_figure(curve, {"x": 10}, [("a", "A"), ("b", "B")])
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 3  # two curves and the chosen step
