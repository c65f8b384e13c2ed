"""Detection MLE glue: batches, the validation evaluator, the wrong-image control (smoke preset)."""

import numpy as np
import pytest

from rlcv_lib.config import get_config
from rlcv_lib.core import evaluate as ev
from rlcv_lib.core import pretrain as mle
from rlcv_lib.data import pipeline, sources
from rlcv_lib.tasks.detection import metrics as dm
from rlcv_lib.tasks.detection import pretrain as dx
from rlcv_lib.tasks.detection import task as det


@pytest.fixture(scope="module")
def cfg():
    return get_config("smoke", overrides={"train.num_steps": 4, "train.eval_every": 2,
                                          "train.log_every": 2, "train.ckpt_every": 2})


@pytest.fixture(scope="module")
def task(cfg):
    return dx.make_task(cfg)


@pytest.fixture(scope="module")
def run(cfg, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("det") / "mle"
    return mle.pretrain(dx.RECIPE, cfg, workdir, eval_examples=16, progress=False), workdir


def _loader(cfg, batch=8):
    src = sources.open_source("scenes", "train", world=cfg.world, size=32)
    return pipeline.Loader(src, batch, seed=3, max_boxes=cfg.world.max_objects)


def test_batches_are_pure_in_seed_and_step_and_hold_the_boxes(cfg, task):
    fn = dx.make_batch_fn(task, _loader(cfg), seed=3)
    a, b = fn(2), fn(2)
    assert set(a) == {"image", "tokens", "boxes", "labels"}
    np.testing.assert_array_equal(a["tokens"], b["tokens"])
    assert a["tokens"].shape == (8, task.max_len) and a["tokens"].dtype == np.int32
    for tokens, boxes, labels in zip(a["tokens"], a["boxes"], a["labels"], strict=True):
        slots = task.decode(tokens)
        keep = labels >= 0
        want = sorted(map(tuple, np.c_[task.quantize(boxes[keep]), labels[keep]].tolist()))
        got = np.c_[np.rint(slots.boxes[slots.present] * task.cfg.max_level),
                    slots.labels[slots.present]]
        assert sorted(map(tuple, got.astype(int).tolist())) == want


def test_box_order_is_random_per_step(cfg, task):
    batch = _loader(cfg).batch(0)
    orders = {dx.tokenize_batch(task, batch, seed=0, step=s).tobytes() for s in range(6)}
    assert len(orders) > 1  # some scene has >= 2 boxes in the smoke world
    assert len({dx.tokenize_batch(task, batch, seed=5, step=1).tobytes() for _ in range(3)}) == 1


def test_token_kind_masks_on_a_hand_built_sequence():
    # two boxes then PAD slots: 8 coords, 2 classes, 2 confs, exactly one free PAD choice
    t = np.zeros(24, np.int64)
    t[0:6] = [3, 4, 5, 6, 40, 2]
    t[6:12] = [7, 8, 9, 10, 41, 2]
    m = dx.token_kind_masks(t[None])
    assert {k: int(v.sum()) for k, v in m.items()} == {"coord": 8, "class": 2, "pad": 1,
                                                        "conf": 2}
    assert m["pad"][0, 12] and m["class"][0, 4] and m["conf"][0, 11]


def test_pretrain_records_a_validation_curve_and_resumes(cfg, run):
    result, workdir = run
    evals = result.history.records("eval")
    assert [r["step"] for r in evals] == [0, 2, 4]
    for r in evals:
        for k in ("mAP", "AP50", "recall50"):
            assert -1.0 <= r[k] <= 1.0
        assert r["boxes_per_image"] >= 0 and r["gt_per_image"] > 0
        assert all(np.isfinite(r[f"nll_{k}"]) and r[f"nll_{k}"] > 0 for k in dx.TOKEN_KINDS)
    assert evals[-1]["nll_conf"] < evals[0]["nll_conf"]  # conf targets are always 2: learnt
    again = mle.pretrain(dx.RECIPE, cfg, workdir, eval_examples=16, progress=False)
    assert len(again.history.records("train")) == len(result.history.records("train"))


def test_predictions_are_what_the_evaluator_scores(cfg, task, run):
    result, _ = run
    preds, _ = dm.predict(result.model, task, result.val.batch["image"][:4], dm.MLE_RULE)
    assert len(preds) == 4
    for p in preds:
        assert p["boxes"].shape == (len(p["labels"]), 4)
        assert np.all((p["scores"] > 0) & (p["scores"] <= 1))  # class-token probabilities
        assert np.all(p["boxes"][:, 2:] > p["boxes"][:, :2])


def test_wrong_image_control(task, run):
    result, _ = run
    batch = {k: result.val.batch[k][:8] for k in ("image", "boxes", "labels")}
    control = ev.wrong_image_control(dx.RECIPE, result.model, task, batch)
    for k in dx.TOKEN_KINDS:
        assert control["gap"][k] == pytest.approx(control["wrong"][k] - control["true"][k])
    assert control["gap"]["coord"] != 0.0  # the model's outputs depend on the image
    same = dict(batch, image=np.repeat(batch["image"][:1], 8, axis=0))
    control = ev.wrong_image_control(dx.RECIPE, result.model, task, same)
    assert all(abs(v) < 1e-5 for v in control["gap"].values())  # identical images: no gap
    with pytest.raises(ValueError, match=">= 2 images"):
        ev.wrong_image_control(dx.RECIPE, result.model, task, {k: v[:1] for k, v in batch.items()})


def test_kind_nll_is_the_mean_teacher_forced_nll(task, run):
    from rlcv_lib.core import sampling

    result, _ = run
    images = result.val.batch["image"][:4]
    tokens = dx.truth_tokens(task, {k: result.val.batch[k][:4] for k in ("boxes", "labels")})
    lp = np.asarray(sampling.teacher_forced_jit(
        result.model, images, tokens[:, None], sampling.DecodeSpec.for_task(task)).logprobs)[:, 0]
    got = ev.masked_nll(result.model, task, images, tokens, dx.token_kind_masks(tokens), chunk=3)
    cls = (np.arange(task.max_len) % det.TOKENS_PER_BOX == 4) & (tokens != det.PAD)
    assert got["class"] == pytest.approx(-lp[cls].mean(), rel=1e-5)


def test_restore_model_gives_the_trained_model(cfg, task, run):
    result, workdir = run
    model, _, step = mle.restore_model(dx.RECIPE, cfg, workdir)
    assert step == 4
    images = result.val.batch["image"][:4]
    tokens = dx.truth_tokens(task, {k: result.val.batch[k][:4] for k in ("boxes", "labels")})
    masks = dx.token_kind_masks(tokens)
    assert (ev.masked_nll(model, task, images, tokens, masks)
            == ev.masked_nll(result.model, task, images, tokens, masks))
