"""Test-wide settings: headless matplotlib, JAX on the CPU; the slowest modules run first."""

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

SLOWEST_FIRST = ("test_captioning_tune", "test_parallel", "test_train", "test_shipped",
                 "test_steps", "test_cli", "test_detection_tune", "test_detection_task",
                 "test_uvim_stage1", "test_captioning_pretrain", "test_vqvae")
"""Modules of the longest total time (``pytest --durations``, 2 workers): `make unit-test`
hands whole modules to its two workers in collection order, so starting with these keeps one
worker from finishing alone with a long module at the end. Order only: every test stays
independent of every other."""


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    def module_rank(item):
        module = getattr(item, "module", None)
        return rank.get(module.__name__.rpartition(".")[2] if module else "", len(rank))

    items.sort(key=module_rank)


@pytest.fixture
def smoke_stage_round_trip(tmp_path):
    """``fn(recipe, task_name, stage) -> (cfg, run, manifest, loaded)``: a recipe's stage
    pretrained on the smoke preset (16 training scenes, 8 validation), shipped from its work
    directory and loaded back through the manifest match (UViM's stage I tests)."""
    from rlcv_lib import config
    from rlcv_lib.core import checkpoint, pretrain, shipped

    def round_trip(recipe, task_name, stage):
        cfg = config.get_config("smoke", task=task_name)
        run = pretrain.pretrain(recipe, cfg, tmp_path / "run", eval_examples=8, train_size=16,
                                progress=False)
        out = shipped.ship_run(recipe, cfg, tmp_path / "run", out=tmp_path / "shipped",
                               stage=stage)
        loaded = shipped.load_or_pretrain(recipe, cfg, None, path=out, stage=stage)
        return cfg, run, checkpoint.read_manifest(out), loaded

    return round_trip
