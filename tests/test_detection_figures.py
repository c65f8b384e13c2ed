"""Detection's figures: the before/after panels."""

import numpy as np

from rlcv_lib.config import get_config
from rlcv_lib.core import evaluate as ev
from rlcv_lib.tasks.detection import figures as dfig
from rlcv_lib.tasks.detection import pretrain as dp


def test_before_after_panels_one_row_per_model():
    cfg = get_config("smoke")
    task = dp.make_task(cfg, class_counts=np.ones(len(cfg.world.thing_classes)))
    split = ev.load_split(cfg, "test", 4)
    truth = [{"boxes": e["boxes"], "labels": e["labels"], "scores": np.ones(len(e["labels"]))}
             for e in split.examples]
    fig = dfig.before_after_figure(task, split.examples, [("a", truth), ("b", truth)], [0, 2, 3])
    assert np.asarray(fig.axes).size == 6
    assert fig.axes[0].get_ylabel() == "a" and fig.axes[3].get_ylabel() == "b"


def test_spread_by_count_takes_each_count_in_turn_most_objects_first():
    examples = [{"labels": [0] * k} for k in (1, 1, 3, 2, 3, 1, 2)]
    assert dfig.spread_by_count(examples, 3) == [0, 2, 3]  # the first 3, 2 and 1 (sorted)
    assert dfig.spread_by_count(examples, 5) == [0, 2, 3, 4, 6]  # then the second 3 and 2
    assert dfig.spread_by_count(examples, 20) == list(range(7))
