"""Test-wide settings: headless matplotlib, JAX on the CPU; the slowest modules run first."""

import os

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
