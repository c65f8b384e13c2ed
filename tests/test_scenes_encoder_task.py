"""The scenes encoder's heads, losses, step, evaluator and config checks."""

import dataclasses

import numpy as np
import pytest

from rlcv_lib.config import ConfigError, get_config
from rlcv_lib.core import optim
from rlcv_lib.data import pipeline, scenes
from rlcv_lib.tasks.scenes_encoder import task as enc


def _batch(cfg, n=8, split="train"):
    return pipeline.collate([scenes.example(cfg.world, split, i) for i in range(n)],
                            max_boxes=cfg.world.max_objects)


def test_grey_choice_is_a_pure_function_of_seed_and_step():
    a = enc.grey_choice(0, 7, 1000, 0.25)
    assert np.array_equal(a, enc.grey_choice(0, 7, 1000, 0.25))
    assert not np.array_equal(a, enc.grey_choice(0, 8, 1000, 0.25))
    assert 0.2 < a.mean() < 0.3

def test_the_step_learns_a_fixed_batch_and_the_evaluator_reports_both_inputs():
    cfg = get_config("smoke", task="scenes_encoder")
    task = enc.make_task(cfg)
    model = enc.build(cfg, task)
    batch = task.targets(_batch(cfg, 8), np.array([True, False] * 4))
    opt = optim.make_optimizer(model, dataclasses.replace(cfg.train, schedule="constant"))
    step = enc.make_step(task)
    first = float(step(model, opt, batch)["loss"])
    for _ in range(20):
        last = step(model, opt, batch)
    assert float(last["loss"]) < 0.7 * first
    assert set(last) >= {"loss/semantic", "loss/colour", "loss/centre", "grad_norm"}

    class Val:
        batch = _batch(cfg, 8, "validation")

    metrics = enc.make_evaluator(task, Val)(model)
    assert {"semantic_acc", "colour_acc", "centre_acc", "grey_semantic_acc",
            "grey_loss/semantic"} <= set(metrics)
    assert "grey_colour_acc" not in metrics and "grey_loss/colour" not in metrics
    assert all(np.isfinite(v) for v in metrics.values())

def test_contradictions_are_refused_naming_the_field():
    with pytest.raises(ConfigError, match="grey_fraction"):
        enc.make_task(get_config("smoke", {"scenes_encoder.grey_fraction": 1.5},
                                 task="scenes_encoder"))
    with pytest.raises(ConfigError, match="encoder_init"):
        enc.make_task(get_config("smoke", {"model.encoder_init": "shipped"},
                                 task="scenes_encoder"))
