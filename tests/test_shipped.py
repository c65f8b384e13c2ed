"""Shipped MLE starting points: ship, load with manifest checks, fall back to training."""

import json

import numpy as np
import pytest
from flax import nnx

from rlcv_lib import config, tasks
from rlcv_lib.config import get_config
from rlcv_lib.core import checkpoint
from rlcv_lib.core import evaluate as ev
from rlcv_lib.core import shipped as pretrained
from rlcv_lib.tasks.detection.pretrain import RECIPE


def _cfg(**extra):
    return get_config("smoke", overrides={"train.num_steps": 2, "train.eval_every": 2,
                                          "train.log_every": 1, "train.ckpt_every": 2, **extra})


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """A smoke detector trained from scratch (no shipped one at that path) and then shipped."""
    root = tmp_path_factory.mktemp("ship")
    cfg = _cfg()
    pre = pretrained.load_or_pretrain(RECIPE, cfg, root / "mle", path=root / "none",
                                      eval_examples=8, progress=False)
    run = pretrained.pretrain(RECIPE, cfg, root / "mle", eval_examples=8, progress=False)
    control = ev.wrong_image_control(RECIPE, run.model, run.task, run.val.batch)
    path = pretrained.ship(RECIPE, cfg, run, root / "detection-smoke", control)
    return pre, run, path


def test_without_a_shipped_checkpoint_it_trains(shipped):
    pre, _, _ = shipped
    assert pre.source == "trained" and pre.path is None
    assert pre.manifest["steps"] == 2 and [r["step"] for r in pre.history.records("eval")] == [0, 2]


def test_ship_then_load_gives_the_same_model_curve_and_manifest(shipped):
    _, run, path = shipped
    manifest = json.loads((path / checkpoint.MANIFEST).read_text())
    assert manifest["task"] == "detection" and manifest["steps"] == 2
    assert set(manifest["wrong_image_control"]) == {"true", "wrong", "gap"}
    assert np.isfinite(manifest["metrics"]["nll_coord"])
    pre = pretrained.load_or_pretrain(RECIPE, _cfg(), None, path=path)
    assert pre.source == "shipped" and pre.path == path
    assert pre.history.records() == run.history.records()
    for a, b in zip(nnx.state(pre.model, nnx.Param).flat_state(),
                    nnx.state(run.model, nnx.Param).flat_state(), strict=True):
        np.testing.assert_array_equal(np.asarray(a[1].value), np.asarray(b[1].value))


def test_a_mismatched_config_is_refused_with_the_fix(shipped):
    _, _, path = shipped
    with pytest.raises(checkpoint.ManifestMismatchError,
                       match=r"train.lr: .* -> 0.0005.*\"run.from_scratch\": True.*"
                             r"python -m rlcv_lib pretrain detection smoke"):
        pretrained.load_or_pretrain(RECIPE, _cfg(**{"train.lr": 5e-4}), None, path=path)


def test_tuning_sections_do_not_invalidate_the_shipped_model(shipped):
    _, _, path = shipped
    pre = pretrained.load_or_pretrain(RECIPE, _cfg(**{"tune.lr": 3e-5, "rl.num_samples": 2}),
                                      None, path=path)
    assert pre.source == "shipped"
    # the task section's tuning fields (validation size, checkpoint metric, ...) do not either
    pre = pretrained.load_or_pretrain(
        RECIPE, _cfg(**{"detection.val_size": 7, "detection.conf_lr_mult": 3.0,
                        "detection.tuned_score": "confidence"}), None, path=path)
    assert pre.source == "shipped"
    # ... while a task field that MLE reads does
    with pytest.raises(checkpoint.ManifestMismatchError):
        pretrained.load_or_pretrain(RECIPE, _cfg(**{"detection.num_slots": 9}), None, path=path)


def test_the_control_comes_from_the_manifest_or_is_measured(shipped):
    pre, run, path = shipped
    loaded = pretrained.load_or_pretrain(RECIPE, _cfg(), None, path=path)
    control, where = loaded.wrong_image_control(run.val)
    assert where == "shipped manifest" and control == loaded.manifest["wrong_image_control"]
    control, where = pre.wrong_image_control(run.val)  # trained here: measured now
    assert where.startswith("measured on") and set(control) == {"true", "wrong", "gap"}


def test_the_step_count_matters_only_under_a_decaying_schedule(shipped):
    _, _, path = shipped
    assert _cfg(**{"train.schedule": "constant"}).train.schedule == "constant"
    a = pretrained.matching_config(_cfg(**{"train.schedule": "constant", "train.num_steps": 7}))
    b = pretrained.matching_config(_cfg(**{"train.schedule": "constant", "train.num_steps": 9}))
    assert a.hash() == b.hash()
    c = pretrained.matching_config(_cfg(**{"train.schedule": "cosine", "train.num_steps": 7}))
    d = pretrained.matching_config(_cfg(**{"train.schedule": "cosine", "train.num_steps": 9}))
    assert c.hash() != d.hash()
    # the smoke preset's schedule is cosine: the shipped 2-step model refuses a 3-step config
    with pytest.raises(checkpoint.ManifestMismatchError):
        pretrained.load_or_pretrain(RECIPE, _cfg(**{"train.num_steps": 3}), None, path=path)
    pre = pretrained.load_or_pretrain(RECIPE, _cfg(**{"train.eval_every": 5}), None, path=path)
    assert pre.source == "shipped"


def test_from_scratch_ignores_the_shipped_model(shipped, tmp_path):
    _, _, path = shipped
    pre = pretrained.load_or_pretrain(RECIPE, _cfg(**{"run.from_scratch": True}),
                                      tmp_path / "mle", path=path, eval_examples=8,
                                      progress=False)
    assert pre.source == "trained"


def test_an_earlier_checkpoint_of_a_longer_run_ships_as_it_stood(tmp_path):
    cfg2 = _cfg(**{"train.schedule": "constant", "train.log_every": 1})
    cfg4 = _cfg(**{"train.schedule": "constant", "train.log_every": 1, "train.num_steps": 4})
    workdir = tmp_path / "mle"
    short = pretrained.pretrain(RECIPE, cfg2, workdir, eval_examples=8, progress=False)
    short_history = short.history.records()
    pretrained.pretrain(RECIPE, cfg4, workdir, eval_examples=8, progress=False)  # resumes to 4
    run = pretrained.run_at_step(RECIPE, cfg4, workdir, 2, eval_examples=8)
    assert max(r["step"] for r in run.history.records()) == 2
    assert run.history.records() == sorted(short_history, key=lambda r: (r["step"], r["kind"]))
    for a, b in zip(nnx.state(run.model, nnx.Param).flat_state(),
                    nnx.state(short.model, nnx.Param).flat_state(), strict=True):
        np.testing.assert_array_equal(np.asarray(a[1].value), np.asarray(b[1].value))
    path = pretrained.ship(RECIPE, cfg4, run, tmp_path / "at2")
    assert checkpoint.read_manifest(path)["steps"] == 2


def test_ship_run_ships_the_latest_or_a_given_checkpoint(tmp_path):
    cfg = _cfg(**{"train.schedule": "constant", "train.num_steps": 4})
    pretrained.pretrain(RECIPE, cfg, tmp_path / "mle", eval_examples=8, progress=False)
    latest = pretrained.ship_run(RECIPE, cfg, tmp_path / "mle", out=tmp_path / "latest")
    at2 = pretrained.ship_run(RECIPE, cfg, tmp_path / "mle", at=2, out=tmp_path / "at2")
    assert checkpoint.read_manifest(latest)["steps"] == 4
    assert checkpoint.read_manifest(at2)["steps"] == 2
    assert checkpoint.read_manifest(at2)["stage"] == "mle"
    assert "requires" not in checkpoint.read_manifest(at2)  # a first stage requires nothing


def test_unknown_task_or_stage_names_the_choices():
    with pytest.raises(ValueError, match="captioning"):
        pretrained.recipe_for("segmentation")
    with pytest.raises(ValueError, match="stage2.*its stages: \\['mle'\\]"):
        pretrained.recipe_for("detection", "stage2")
    assert pretrained.recipe_for("detection") is RECIPE
    assert pretrained.shipped_path("detection", "cpu").name == "detection-cpu"


def test_a_later_stage_made_from_another_earlier_stage_is_refused(monkeypatch, tmp_path):
    """A two-stage task (UViM-like): stage2's manifest records stage1's manifest hash; after
    stage1 is re-shipped, the shipped stage2 is refused with what to regenerate."""
    two = tasks.TaskSpec(name="detection", section=tasks.get("detection").section,
                         stages=(tasks.Stage("stage1", "rlcv_lib.tasks.detection.pretrain:RECIPE",
                                             ("model", "world", "train", "detection")),
                                 tasks.Stage("stage2", "rlcv_lib.tasks.detection.pretrain:RECIPE",
                                             ("model", "world", "train", "detection"))))
    monkeypatch.setattr(tasks, "get", lambda name: two)
    monkeypatch.setattr(pretrained, "ROOT", tmp_path)
    cfg = _cfg()
    run = pretrained.pretrain(RECIPE, cfg, tmp_path / "mle", eval_examples=8, progress=False)
    assert pretrained.shipped_path("detection", "smoke", stage="stage1").name == \
        "detection-stage1-smoke"
    with pytest.raises(FileNotFoundError, match="stage 'stage1'"):
        pretrained.requires("detection", "smoke", "stage2")  # stage1 not shipped yet
    s1 = pretrained.shipped_path("detection", "smoke", stage="stage1")
    pretrained.ship(RECIPE, cfg, run, s1, stage="stage1")
    s2 = pretrained.shipped_path("detection", "smoke", stage="stage2")
    pretrained.ship(RECIPE, cfg, run, s2, stage="stage2",
                    requires=pretrained.requires("detection", "smoke", "stage2"))
    assert checkpoint.read_manifest(s2)["requires"] == {"stage1": pretrained.manifest_hash(s1)}
    pre = pretrained.load_or_pretrain(RECIPE, cfg, None, stage="stage2")
    assert pre.source == "shipped" and pre.path == s2
    pretrained.ship(RECIPE, _cfg(**{"run.seed": 1}), run, s1, stage="stage1")  # re-shipped
    with pytest.raises(checkpoint.ManifestMismatchError,
                       match="stage 'stage2' was made from 'stage1'.*pretrain detection smoke "
                             "--stage stage2"):
        pretrained.load_or_pretrain(RECIPE, cfg, None, stage="stage2")


@pytest.mark.parametrize("task_name", [n for n in tasks.NAMES
                                       if tasks.get(n).stages and tasks.get(n).stage().shipped])
def test_the_shipped_cpu_checkpoints_match_the_cpu_preset(task_name):
    """A change to the cpu preset's MLE sections (or the world) must come with `make pretrain`."""
    from rlcv_lib.data import scenes

    path = pretrained.shipped_path(task_name, "cpu")
    manifest = checkpoint.read_manifest(path)
    section = pretrained.recipe_for(task_name).train_section
    cfg = pretrained.matching_config(get_config("cpu", task=task_name), section)
    checkpoint.check_manifest(manifest, cfg, scenes.WORLD_VERSION,
                              sections=pretrained.mle_sections(task_name))
    assert manifest["task"] == task_name and manifest["steps"] > 0
    assert config.hash_of(manifest["config"]) == manifest["config_hash"]  # fields to name


def test_stages_declared_unshipped_have_no_checkpoint():
    for name in tasks.NAMES:
        for stage in tasks.get(name).stages:
            path = pretrained.shipped_path(name, "cpu", stage=stage.name)
            assert (path / checkpoint.MANIFEST).exists() == stage.shipped, (name, stage.name)
