"""The task registry: each task declares itself once, and everything finds it there."""

import tomllib

import pytest

from rlcv_lib import config, tasks
from rlcv_lib.core import shipped
from rlcv_lib.notebook import repo_root


@pytest.mark.parametrize("name", tasks.NAMES)
def test_every_task_declares_a_spec_whose_references_resolve(name):
    spec = tasks.get(name)
    assert spec.name == name
    module, cls, table = spec.section.split(":")
    assert set(tasks.resolve(f"{module}:{table}")) == set(config.PRESETS)
    for section, ref in spec.shared_presets.items():
        assert section in config.CORE_SECTIONS
        assert set(tasks.resolve(ref)) == set(config.PRESETS)
    for stage in spec.stages:
        recipe = tasks.resolve(stage.recipe)
        assert recipe.name == name and name in stage.sections
    if spec.tune is not None:
        assert callable(tasks.resolve(spec.tune))
    if spec.check is not None:
        for preset in ("smoke", "cpu", "gpu"):  # the presets that run on the scenes world
            tasks.resolve(spec.check)(config.get_config(preset, task=name))


def test_each_task_notebook_is_in_the_manifest_in_registry_order():
    manifest = tomllib.loads((repo_root() / "notebooks" / "manifest.toml").read_text())
    order = [nb["name"] for nb in manifest["notebook"]]
    notebooks = [nb for nb in (tasks.get(n).notebook for n in tasks.NAMES) if nb is not None]
    assert all(nb in order for nb in notebooks)
    assert [order.index(nb) for nb in notebooks] == sorted(order.index(nb) for nb in notebooks)
    assert tasks.for_notebook("03_detection").name == "detection"
    assert tasks.for_notebook("01_scenes_world") is None


def test_unknown_names_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="unknown task 'segmentation'; choose one of"):
        tasks.get("segmentation")
    with pytest.raises(ValueError, match="no stage 'x'"):
        tasks.get("detection").stage("x")
    with pytest.raises(ValueError, match="no shipped checkpoints"):
        tasks.get("toy").stage()


def test_stages_come_in_order():
    two = tasks.TaskSpec("t", "m:C:P", stages=(tasks.Stage("stage1", "m:R", ("model",)),
                                               tasks.Stage("stage2", "m:R", ("model",))))
    assert two.stage().name == "stage2"  # the last stage is the one that is tuned
    assert two.previous(two.stage("stage2")).name == "stage1"
    assert two.previous(two.stage("stage1")) is None


def test_shipped_checkpoints_are_found_through_the_registry():
    assert shipped.recipe_for("captioning").name == "captioning"
    assert shipped.mle_sections("detection") == ("model", "world", "train", "detection")
