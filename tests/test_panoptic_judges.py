"""Panoptic's judges (tasks/panoptic/judges.py): the area filter, incoherent segments by size,
and panopticapi's own PQ through the COCO export, equal image by image to the reward's."""

import numpy as np
import pytest

from rlcv_lib.config import get_config
from rlcv_lib.core import evaluate as ev
from rlcv_lib.data import scenes
from rlcv_lib.tasks.panoptic import judges, reward
from rlcv_lib.tasks.panoptic import task as pan

CFG = get_config("smoke", task="panoptic")


def _gt(seg_map, categories, area=None):
    seg_map = np.asarray(seg_map)[None]
    cat = np.asarray(categories)[None]
    counted = [(seg_map == k + 1).sum() for k in range(cat.shape[1])]
    return {"gt_map": seg_map, "gt_category": cat, "gt_crowd": np.zeros_like(cat, bool),
            "gt_area": np.asarray([counted if area is None else area], np.float64)}


def test_area_filter_voids_only_the_small_segments():
    m = np.zeros((1, 6, 6), np.int32)
    m[0, :3] = 1  # 18 px
    m[0, 3:, :2] = 2  # 6 px
    m[0, 5, 5] = 3  # 1 px
    cat = np.array([[4, 5, 6, 7]])  # segment 4 has no pixels
    fm, fc = judges.area_filter(m, cat, 6)
    assert set(np.unique(fm)) == {0, 1, 2} and fc.tolist() == [[4, 5, 0, 0]]
    np.testing.assert_array_equal(fm[m == 3], 0)
    am, ac = judges.area_filter(m, cat, 0)
    np.testing.assert_array_equal(am, m)
    np.testing.assert_array_equal(ac, cat)
    with pytest.raises(ValueError, match="min_area"):
        judges.area_filter(m, cat, -1)


def test_incoherent_segments_are_the_unexcused_unmatched_ones_by_size():
    gt_map = np.zeros((10, 10), np.int32)
    gt_map[:5] = 1  # stuff, category 3
    gt_map[5:] = 2  # a thing, category 1
    gt_map[9, 9] = 0  # one void pixel
    gt = _gt(gt_map, [3, 1])
    pred = gt_map.copy()
    pred[7, 2] = 3  # a 1-px fragment of category 2: matches nothing -> incoherent, small
    pred[9, 9] = 4  # a 1-px segment on void: excused, not incoherent
    pred_cat = np.array([[3, 1, 2, 2]])
    got = judges.segment_judges(pred[None], pred_cat, gt, 3, (0.05, 0.3))
    assert got["segments"].tolist() == [4] and got["incoherent"].tolist() == [1]
    assert got["incoherent_small"].tolist() == [1] and got["segments_small"].tolist() == [2]
    assert got["segments_large"].tolist() == [2] and got["incoherent_large"].tolist() == [0]
    np.testing.assert_allclose(got["pq"], reward.pq_reward(pred[None], pred_cat, **gt,
                                                           num_categories=3))
    # the area filter removes the fragment: nothing incoherent left
    fm, fc = judges.area_filter(pred[None], pred_cat, 2)
    assert judges.segment_judges(fm, fc, gt, 3, (0.05, 0.3))["incoherent"].tolist() == [0]
    with pytest.raises(ValueError, match="size_edges"):
        judges.segment_judges(pred[None], pred_cat, gt, 3, (0.3, 0.05))


def test_choose_min_area_takes_the_best_and_the_smaller_on_ties():
    best, values = judges.choose_min_area(lambda a: {0: 0.5, 8: 0.7, 16: 0.7, 32: 0.6}[a],
                                          [32, 8, 0, 16])
    assert best == 8 and list(values) == [0, 8, 16, 32]
    with pytest.raises(ValueError, match="no area filter"):
        judges.choose_min_area(lambda a: 0.0, [])


@pytest.fixture(scope="module")
def split():
    return ev.load_split(CFG, "validation", 6)


def _perturbed(split):
    """Predictions from the ground truth: shifted a pixel, one segment relabelled, a fragment."""
    gt = pan.ground_truth(split.batch)
    pred = np.roll(gt["gt_map"], 1, axis=2)
    cat = gt["gt_category"].copy()
    cat[0, 0] = cat[0, 0] % len(scenes.categories(CFG.world)) + 1
    free = np.flatnonzero(cat[1] == 0)
    if len(free):  # a 4-px fragment of a new segment in image 1
        pred[1, :2, :2] = free[0] + 1
        cat[1, free[0]] = 1
    cat = np.where(judges.segment_areas(pred, cat.shape[1]) > 0, cat, 0)
    return gt, pred, cat


def test_panopticapi_equals_the_reward_image_by_image(split, tmp_path):
    gt, pred, cat = _perturbed(split)
    cats = scenes.categories(CFG.world)
    ours = reward.pq_reward(pred, cat, gt["gt_map"], gt["gt_category"], gt["gt_crowd"],
                            gt["gt_area"], len(cats))
    assert ours.min() < 1  # the perturbation is not a perfect prediction
    for i in range(len(split)):
        theirs = judges.panopticapi_metrics(split.examples[i:i + 1], pred[i:i + 1],
                                            cat[i:i + 1], cats, tmp_path / str(i))
        assert theirs["PQ"] == pytest.approx(100 * ours[i], abs=1e-9)


def test_panopticapi_metrics_of_the_truth_are_perfect(split):
    gt = pan.ground_truth(split.batch)
    got = judges.panopticapi_metrics(split.examples, gt["gt_map"], gt["gt_category"],
                                     scenes.categories(CFG.world))
    for k in ("PQ", "SQ", "RQ", "PQ_th", "PQ_st"):
        assert got[k] == pytest.approx(100.0)
    assert got["n"] > 0
    with pytest.raises(ValueError, match="examples but"):
        judges.panopticapi_metrics(split.examples[:2], gt["gt_map"], gt["gt_category"],
                                   scenes.categories(CFG.world))


def test_prediction_infos_list_the_segments_with_pixels():
    m = np.array([[[0, 2], [2, 2]]])
    assert judges.prediction_infos(m, np.array([[5, 6, 7]])) == [[{"id": 2, "category_id": 6}]]
