"""The tasks: one package per task, each declaring itself once as ``SPEC`` in its ``__init__``.

A :class:`TaskSpec` says everything the rest of the package needs to find a task: its config
section, the presets it brings for shared sections (e.g. its own ``tune`` values), its shipped
checkpoints in order (:class:`Stage`: one MLE model, or UViM's stage I then stage II), its
tuning entry point and its notebook. ``config``, ``core.shipped``, the command line and the
notebooks all read this registry; nothing else lists the tasks.

References to code are ``"module:attribute"`` strings, imported on first use, so reading the
registry imports no task code (and no optional dependency of one).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from typing import Any

NAMES: tuple[str, ...] = ("toy", "scenes_encoder", "detection", "captioning", "colorization",
                          "panoptic")
"""Every task package under ``rlcv_lib/tasks/``, in the order the notebooks run them."""


def resolve(ref: str) -> Any:
    """The object a ``"package.module:attribute"`` reference names."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclasses.dataclass(frozen=True)
class Stage:
    """One shipped checkpoint of a task, made by MLE pretraining with ``recipe``."""

    name: str
    """``"mle"`` for a one-stage task; e.g. ``"stage1"``, ``"stage2"`` for UViM."""
    recipe: str
    """``"module:RECIPE"``, the :class:`~rlcv_lib.core.pretrain.Recipe` that trains it."""
    sections: tuple[str, ...]
    """The config sections that decide what it is (its manifest's config hash covers them)."""
    shipped: bool = True
    """Whether ``checkpoints/`` holds its cpu checkpoint (tests hold the cpu preset to it);
    False while a stage is being built: loading it then trains it."""


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """How a task declares itself (see the module docstring)."""

    name: str
    section: str
    """``"module:ConfigClass:PRESETS"``: the task's config section (named ``name``) and its
    values per preset."""
    shared_presets: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Shared section -> ``"module:PRESETS"``: the task's own values of a shared section
    (e.g. ``tune``), used instead of the shared table when a config is resolved for it."""
    stages: tuple[Stage, ...] = ()
    """Shipped checkpoints in the order they are made; a later stage's manifest records the
    manifest hash of the stage before it."""
    tune: str | None = None
    """``"module:function"``: ``fn(cfg, *, workdir, start, cache_dir, progress, on_eval)``, the
    task's main path (tuning from the MLE model, the checkpoint chosen on validation, the test
    rows), returning a result whose ``summary()`` is JSON-able with ``"test": {row: metrics}``:
    what the task's notebook and ``python -m rlcv_lib tune`` run."""
    notebook: str | None = None
    """The notebook that reproduces the task (a name in ``notebooks/manifest.toml``)."""
    check: str | None = None
    """``"module:function"``: ``fn(cfg)`` raises :class:`~rlcv_lib.config.ConfigError` naming
    both fields when two fields of a config resolved for the task contradict each other (the
    model's image size and the world's, slots and objects); what
    :func:`rlcv_lib.config.check_consistent` runs."""

    def stage(self, name: str | None = None) -> Stage:
        """The stage called ``name`` (default: the last, the one that is tuned)."""
        if not self.stages:
            raise ValueError(f"task {self.name!r} has no shipped checkpoints (no stages)")
        if name is None:
            return self.stages[-1]
        for s in self.stages:
            if s.name == name:
                return s
        raise ValueError(f"task {self.name!r} has no stage {name!r}; its stages: "
                         f"{[s.name for s in self.stages]}")

    def stage_label(self, stage: Stage) -> str:
        """``<task>`` for a one-stage task's ``"mle"`` checkpoint, else ``<task>-<stage>``: how
        its shipped checkpoint and default work directory are named."""
        return self.name if stage.name == "mle" else f"{self.name}-{stage.name}"

    def previous(self, stage: Stage) -> Stage | None:
        """The stage made before ``stage`` (None for the first)."""
        i = self.stages.index(stage)
        return self.stages[i - 1] if i else None


def get(name: str) -> TaskSpec:
    """The spec of task ``name``; a ValueError naming the known tasks for any other name."""
    if name not in NAMES:
        raise ValueError(f"unknown task {name!r}; choose one of {list(NAMES)}")
    spec = importlib.import_module(f"rlcv_lib.tasks.{name}").SPEC
    if spec.name != name:
        raise RuntimeError(f"rlcv_lib.tasks.{name} declares a spec named {spec.name!r}")
    return spec


def for_notebook(notebook: str) -> TaskSpec | None:
    """The task whose notebook is ``notebook``, or None (e.g. the scenes world's)."""
    found = [s for s in map(get, NAMES) if s.notebook == notebook]
    return found[0] if found else None
