"""Detection's reward tuning: the monitor, the confidence readout, the main path
(smoke preset, untrained tiny models: these test plumbing and definitions, not results)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rlcv_lib.config import ConfigError, get_config
from rlcv_lib.core import evaluate as ev
from rlcv_lib.core import sampling
from rlcv_lib.models import build_model
from rlcv_lib.tasks.detection import metrics as dm
from rlcv_lib.tasks.detection import task as det
from rlcv_lib.tasks.detection import tune as dt


@pytest.fixture(scope="module")
def cfg():
    return get_config("smoke", task="detection")


@pytest.fixture(scope="module")
def task(cfg):
    return det.DetectionTask.for_world(cfg.detection, cfg.world, np.ones(
        len(cfg.world.thing_classes)))


@pytest.fixture(scope="module")
def model(cfg, task):
    return build_model(cfg.model, task, seed=0)


@pytest.fixture(scope="module")
def data(cfg):
    return ev.load_split(cfg, "test", 8)


def _pred(boxes, labels, scores):
    return {"boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
            "labels": np.asarray(labels, np.int32), "scores": np.asarray(scores, np.float32)}


def test_monitor_outputs_and_keeps_the_best_state(cfg, task):
    val = ev.load_split(cfg, "validation", 8)
    model = build_model(cfg.model, task, seed=1)
    mon = dt.TuningMonitor(task, val, num_samples=2, seed=0)
    out = mon(model, 0)
    assert set(out) == {"val_reward", "mAP", "AP50", "recall50", "recall50_gt",
                        "boxes_per_image", "duplicates_per_image", "mAP_class_score",
                        "mAP_confidence_score"}
    assert mon.select_rule == dm.TUNED_RULE and dm.TUNED_RULE.score == "class_x_confidence"
    assert mon.best.metric == "mAP"
    assert np.isfinite(out["val_reward"]) and out["val_reward"] >= 0
    assert mon(model, 1) == out  # fixed key, same model: same numbers
    assert mon.best_step == 0 and len(mon.history) == 2 and mon.seconds > 0
    before = jax.tree.map(np.array, nnx.state(model, nnx.Param))
    # a later model that does not beat the best validation mAP does not replace its state
    mon.best.value = 2.0  # above any mAP: step 0 stays the best
    nnx.update(model, jax.tree.map(lambda x: x + 1.0, nnx.state(model, nnx.Param)))
    mon(model, 5)
    assert mon.best_step == 0
    assert mon.restore_best(model) == 0
    after = jax.tree.map(np.array, nnx.state(model, nnx.Param))
    jax.tree.map(np.testing.assert_array_equal, before, after)


def test_validation_reward_is_the_task_reward_of_the_samples(model, task, data):
    batch = data.batch
    key = jax.random.key(7)
    r = dt.validation_reward(model, task, batch, 3, key)  # 8 images: one chunk
    spec = sampling.DecodeSpec.for_task(task, num_samples=3)
    tokens = np.asarray(sampling.sample_jit(model, batch["image"], jax.random.fold_in(key, 0),
                                            spec).tokens)
    want, _ = task.reward(tokens, batch)
    assert r == pytest.approx(float(want.mean()))


def test_reset_confidence_changes_only_the_confidence_positions(model, task, data):
    batch = data.batch
    x = batch["image"][:4]
    _, tokens = dm.predict(model, task, x, dm.PIX2SEQ_RULE, key=jax.random.key(2))
    spec = sampling.DecodeSpec.for_task(task)
    before = np.asarray(sampling.teacher_forced_jit(model, x, tokens[:, None], spec)
                        .log_softmax[:, 0])
    reset = nnx.clone(model)
    dt.reset_confidence(reset)
    after = np.asarray(sampling.teacher_forced_jit(reset, x, tokens[:, None], spec)
                       .log_softmax[:, 0])
    conf = np.arange(task.max_len) % det.TOKENS_PER_BOX == det.CONF_KIND
    np.testing.assert_allclose(after[:, ~conf], before[:, ~conf], atol=1e-6)
    np.testing.assert_allclose(np.exp(after[:, conf][..., 1:3]), 0.5, atol=1e-6)
    assert not np.allclose(np.exp(before[:, conf][..., 1:3]), 0.5, atol=1e-3)
    scores = dm.predict(reset, task, x, dataclasses.replace(dm.PIX2SEQ_RULE,
                                                            score="confidence"))[0]
    np.testing.assert_allclose(np.concatenate([p["scores"] for p in scores]), 0.5, atol=1e-6)
    dt.reset_confidence(reset, margin=1.0)
    lsm = np.asarray(sampling.teacher_forced_jit(reset, x, tokens[:, None], spec)
                     .log_softmax[:, 0])
    np.testing.assert_allclose(np.exp(lsm[:, conf][..., 2]), 1 / (1 + np.exp(-1.0)), atol=1e-6)
    np.testing.assert_allclose(lsm[:, ~conf], before[:, ~conf], atol=1e-6)


def test_confidence_lr_scales_only_the_confidence_readout(model):
    assert dt.confidence_lr(1.0) is None
    tx = dt.confidence_lr(10.0)
    grads = jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param))
    out, _ = tx.update(grads, tx.init(grads))
    kernel = np.asarray(out["decoder"]["head"]["kernel"][...])
    scaled = np.zeros(kernel.shape[-1], bool)
    scaled[[det.CONF_LOW, det.CONF_HIGH]] = True
    assert (kernel[:, scaled] == 10).all() and (kernel[:, ~scaled] == 1).all()
    rest = [np.asarray(v[...]) for p, v in nnx.to_flat_state(out) if "head" not in p]
    assert all((r == 1).all() for r in rest)


def test_the_tuning_knobs_are_config_fields_with_one_value_per_preset():
    cpu = get_config("cpu", task="detection")
    assert (cpu.tune.num_steps, cpu.tune.batch_size, cpu.tune.eval_every) == (1500, 16, 250)
    assert get_config("cpu").tune.num_steps == 400  # the shared presets (captioning's)
    assert (cpu.detection.val_size, cpu.detection.conf_lr_mult,
            cpu.detection.tuned_score) == (1024, 10.0, "class_x_confidence")
    over = get_config("cpu", {"tune.num_steps": 7, "detection.val_size": 5}, task="detection")
    assert over.tune.num_steps == 7 and over.detection.val_size == 5
    assert dm.tuned_rule(over.detection.__class__(tuned_score="confidence")) == dm.TUNED_CONF_RULE
    with pytest.raises(ConfigError, match="tuned_score"):
        get_config("cpu", {"detection.tuned_score": "iou"}, task="detection")
    with pytest.raises(ConfigError, match="val_size"):
        get_config("cpu", {"detection.val_size": 0}, task="detection")


def test_tune_and_evaluate_runs_the_main_path_and_reads_test_once_per_row(monkeypatch):
    """The notebook's and the command line's main path, at toy length: the validation split
    of ``detection.val_size`` scenes chooses, the test split is scored after tuning."""
    loads = []
    load_split = ev.load_split

    def recording(cfg, split, n, cache_dir=None):
        loads.append((split, n))
        return load_split(cfg, split, n, cache_dir)

    monkeypatch.setattr(ev, "load_split", recording)
    cfg = get_config("smoke", {"tune.num_steps": 2, "tune.eval_every": 1,
                               "detection.val_size": 8, "train.num_steps": 2}, task="detection")
    seen = []
    result = dt.tune_and_evaluate(cfg, on_eval=seen.append)
    assert ("validation", 8) in loads and ("test", cfg.run.eval_examples) in loads
    assert [e["step"] for e in seen] == [0, 1, 2]
    assert list(result.metrics) == ["MLE", "tuned", "tuned, confidence score",
                                    "tuned, class score"]
    assert result.best_step in (0, 1, 2) and result.best_step == result.monitor.best_step
    summary = result.summary()
    assert summary["test"] is result.metrics and [r["step"] for r in summary["curve"]] == [0, 1, 2]
    assert summary["mle_source"] == "trained"  # no shipped smoke detector
    # the MLE row is the untouched MLE model; the tuned row reads the restored state
    again, _ = dm.evaluate(result.mle_model, result.pre.task, result.test, dm.MLE_RULE)
    assert again == result.metrics["MLE"]
