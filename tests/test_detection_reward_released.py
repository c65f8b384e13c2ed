"""The literal replay of the released detection reward: its quirks, as the released code has
them (the reward's parity with it is tested in ``test_detection_reward.py``)."""

import numpy as np
import pytest

from rlcv_lib.tasks.detection import reward as D
from rlcv_lib.tasks.detection import reward_released as R

RELEASED_WEIGHTS = np.array([1, 0, 2, 0, 2, 0, 0, 3, 0, 2]) / 10  # on 0.5, 0.55, ..., 0.95


def test_released_replay_weights_thresholds_1_2_2_3_2(monkeypatch):
    """Quirk 1 lives in the replay's dictionary loop: probe it with a per-threshold reward that
    is 1 at one threshold and 0 elsewhere, and read off the weight of that threshold."""
    cfg = R.ReleasedConfig(num_cls=2)
    seen = []
    for k, probe in enumerate(D.THRESHOLDS):
        def fake(seqs_pred, seqs_gt, thr, cfg, probe=probe):
            seen.append(thr)
            one = np.ones((1, 1)) * float(thr == probe)
            return {"reward": one, "num_matches": one, "nms_penalty": one,
                    "correct": np.zeros((1, 1, 1)), "match_iou": np.zeros((1, 1, 1))}
        monkeypatch.setattr(R, "_batched", fake)
        r, _ = R.reward_fn(np.zeros((1, 1, 6)), np.zeros((1, 6)), cfg)
        assert r[0, 0] == pytest.approx(RELEASED_WEIGHTS[k]), D.THRESHOLDS[k]
    assert seen == list(D.THRESHOLDS) * 10  # all ten thresholds are computed every time
    np.testing.assert_allclose(RELEASED_WEIGHTS[[0, 2, 4, 7, 9]] * 10, [1, 2, 2, 3, 2])


def test_seq2box_reads_and_clips_the_released_token_layout():
    """One box [ymin, xmin, ymax, xmax, class, confidence], then a slot of out-of-range
    tokens that every field clips, then a trailing partial box that is cut off."""
    cfg = R.ReleasedConfig(max_level=10, max_conf=2, num_cls=3)
    offset = 1 + cfg.max_conf  # PAD, then the confidence tokens, then the coordinate levels
    cls = offset + cfg.max_level + 1 + 2  # class 2
    seq = np.array([offset + 1, offset + 2, offset + 5, offset + 6, cls, 2,
                    0, 0, 999, 999, 999, 999, 7, 7])
    boxes, labels, confs = R.seq2box(seq, cfg.max_level, cfg.max_conf, cfg.num_cls)
    assert boxes.shape == (2, 4)
    np.testing.assert_allclose(boxes[0], [0.1, 0.2, 0.5, 0.6])
    np.testing.assert_allclose(boxes[1], [0.0, 0.0, 1.0, 1.0])
    assert labels.tolist() == [2, 2] and confs.tolist() == [2, 2]


def test_synthetic_batch_shapes():
    fx = R.synthetic_batch(np.random.default_rng(0), 2, 3, num_slots=4, max_gt=5, max_level=50,
                           num_cls=3)
    assert fx["pred_seqs"].shape == (2, 3, 24) and fx["gt_seqs"].shape == (2, 24)
    assert fx["gt_boxes"].shape == (2, 5, 4) and fx["gt_labels"].shape == (2, 5)


@pytest.mark.parametrize("max_level,slots,max_gt,num_cls", [(32, 6, 4, 3), (1000, 100, 30, 80)])
def test_the_jitted_jax_port_equals_the_replay(max_level, slots, max_gt, num_cls):
    """The fair speed baseline computes the released reward: in float64 exactly the replay's
    rewards and confidence targets, reading only the first ``max_gt`` ground-truth slots; in
    float32 the same wherever no IoU lies at a threshold."""
    import jax

    rng = np.random.default_rng(3)
    counts = rng.integers(100, 10_000, num_cls)
    cfg = R.ReleasedConfig(max_level=max_level, num_cls=num_cls,
                           cls_counts=tuple(counts.tolist()))
    fx = R.synthetic_batch(rng, 4, 4, slots, max_gt, max_level, num_cls, disjoint=True)
    ref, info = R.reward_fn(fx["pred_seqs"], fx["gt_seqs"], cfg)
    with jax.enable_x64(True):
        got, match_iou = R.make_jax_reward(cfg, "float64")(fx["pred_seqs"],
                                                          fx["gt_seqs"][:, :6 * max_gt])
        np.testing.assert_allclose(np.asarray(got), ref, atol=1e-12)
        np.testing.assert_allclose(np.asarray(match_iou), info["match_iou"], atol=1e-12)
    got32, _ = R.make_jax_reward(cfg)(fx["pred_seqs"], fx["gt_seqs"])
    assert np.asarray(got32).dtype == np.float32
    np.testing.assert_allclose(np.asarray(got32), ref, atol=1e-4)
