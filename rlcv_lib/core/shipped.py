"""Shipped MLE starting points (docs/design.md §4): ``make pretrain`` writes them, notebooks
load them.

The paper tunes models that were pretrained by MLE elsewhere; the package ships its cpu preset's
MLE checkpoints the same way. One directory per (task, preset) under ``checkpoints/`` (per
(task, stage, preset) for a task of several stages, e.g. UViM's)::

    checkpoints/detection-cpu/
      variables/        model variables (Orbax, no optimizer state)
      manifest.json     config hash of the MLE sections, world version, commit, steps, seconds,
                        final validation metrics, the wrong-image control
      history.jsonl     the pretraining curve (what the notebook plots)

:func:`load_or_pretrain` is the notebooks' one call: the shipped checkpoint if it exists and its
manifest matches the config (a mismatch is refused, never silently reused), else MLE from
scratch in the workdir (``run.from_scratch=True`` forces that).

A task declares its stages in order (:class:`rlcv_lib.tasks.Stage`); a later stage's manifest
records the manifest hash of the stage it was made from (``requires``), and loading refuses it
when that stage has been re-shipped since (:func:`check_stage_chain`).

``python -m rlcv_lib pretrain TASK PRESET`` trains, ``python -m rlcv_lib ship TASK PRESET``
ships (:mod:`rlcv_lib.cli`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rlcv_lib import tasks
from rlcv_lib.core import checkpoint, encoder_init, evaluate
from rlcv_lib.core.history import History
from rlcv_lib.core.pretrain import PretrainResult, Recipe, pretrain, restore_model
from rlcv_lib.data import scenes

ROOT = Path(__file__).resolve().parents[2] / "checkpoints"
"""Where shipped checkpoints live (``checkpoints/`` beside the package)."""

CONTROL_EXAMPLES = 256
"""Validation scenes of a shipped model's final evaluation and wrong-image control."""


def recipe_for(task_name: str, stage: str | None = None) -> Recipe:
    """The MLE recipe of a task's stage (default: its last), from the task registry."""
    return tasks.resolve(tasks.get(task_name).stage(stage).recipe)


def mle_sections(task_name: str, stage: str | None = None) -> tuple[str, ...]:
    """The config sections that decide what a stage's MLE produces (tuning sections
    excluded): its manifest's config hash covers them."""
    return tasks.get(task_name).stage(stage).sections


def _stage_of(recipe: Recipe, stage: str | None) -> tasks.Stage:
    return tasks.get(recipe.name).stage(stage)


BOOKKEEPING_FIELDS = ("num_steps", "log_every", "eval_every", "ckpt_every", "keep_checkpoints")
"""``train`` fields a shipped checkpoint need not match under a constant learning rate: they say
when training stopped and what it logged, not what the model is (the manifest records its steps).
Under a decaying schedule ``num_steps`` shapes the learning rate, so it must match."""


def matching_config(cfg: Any, section: str = "train") -> Any:
    """``cfg`` with the bookkeeping fields of its training section (``train``, or the one a
    recipe names) reset to their defaults: what a shipped checkpoint's config hash is computed
    from."""
    tcfg = getattr(cfg, section)
    ignore = BOOKKEEPING_FIELDS if tcfg.schedule == "constant" else BOOKKEEPING_FIELDS[1:]
    default = type(tcfg)()
    reset = dataclasses.replace(tcfg, **{f: getattr(default, f) for f in ignore})
    return cfg.replace(**{section: reset})


def shipped_path(task_name: str, preset: str, root: str | Path | None = None,
                 stage: str | None = None) -> Path:
    """``checkpoints/<task>-<preset>`` (a one-stage task's ``mle`` stage) or
    ``checkpoints/<task>-<stage>-<preset>`` (e.g. UViM's stages)."""
    spec = tasks.get(task_name)
    return Path(ROOT if root is None else root) / f"{spec.stage_label(spec.stage(stage))}-{preset}"


def manifest_hash(path: str | Path) -> str:
    """sha256 (16 hex) of a shipped checkpoint's manifest file: what a later stage records as
    the checkpoint it was made from."""
    return hashlib.sha256((Path(path) / checkpoint.MANIFEST).read_bytes()).hexdigest()[:16]


def requires(task_name: str, preset: str, stage: str | None = None,
             root: str | Path | None = None) -> dict[str, str]:
    """``{previous stage: its manifest hash}`` for a stage made now (``{}`` for a first
    stage). Raises FileNotFoundError when the previous stage is not shipped."""
    spec = tasks.get(task_name)
    prev = spec.previous(spec.stage(stage))
    if prev is None:
        return {}
    path = shipped_path(task_name, preset, root, prev.name)
    if not (path / checkpoint.MANIFEST).exists():
        raise FileNotFoundError(
            f"{task_name} stage {spec.stage(stage).name!r} starts from stage {prev.name!r}, "
            f"which is not shipped at {path}: make it first with `python -m rlcv_lib pretrain "
            f"{task_name} {preset} --stage {prev.name}` then `... ship ... --stage {prev.name}`")
    return {prev.name: manifest_hash(path)}


def check_stage_chain(manifest: Mapping[str, Any], task_name: str, preset: str,
                      stage: str | None = None, root: str | Path | None = None) -> None:
    """Refuses a shipped stage made from another checkpoint of the stage before it than the
    one shipped now (:class:`~rlcv_lib.core.checkpoint.ManifestMismatchError`, saying what to
    regenerate)."""
    spec = tasks.get(task_name)
    this = spec.stage(stage)
    prev = spec.previous(this)
    if prev is None:
        return
    want = requires(task_name, preset, this.name, root)[prev.name]
    got = dict(manifest.get("requires") or {}).get(prev.name)
    if got != want:
        raise checkpoint.ManifestMismatchError(
            f"shipped {task_name} stage {this.name!r} was made from {prev.name!r} manifest "
            f"{got}, but the shipped {prev.name!r} is {want}: the codes it learnt are not the "
            f"ones that stage produces. Regenerate it: `python -m rlcv_lib pretrain {task_name} "
            f"{preset} --stage {this.name}`, then `python -m rlcv_lib ship {task_name} {preset} "
            f"--stage {this.name}`.")


@dataclasses.dataclass
class Pretrained:
    """An MLE model ready for tuning, and where it came from."""

    model: Any
    task: Any
    history: History
    """The pretraining curve (validation metrics at ``kind == "eval"``)."""
    source: str
    """``"shipped"`` (loaded from ``path``) or ``"trained"`` (MLE ran in this process)."""
    path: Path | None
    manifest: dict[str, Any]
    """The shipped manifest, or the same fields for a model trained here."""
    recipe: Recipe

    @property
    def encoder_start(self) -> str:
        """Where this model's encoder started its MLE: the shared scenes encoder (path and
        steps, from the manifest's ``encoder_init``) or random weights."""
        start = self.manifest.get("encoder_init")
        if not start:
            return "random weights (trained with the task's MLE)"
        return (f"the scenes encoder {start['path']} ({start['steps']} updates, manifest "
                f"{start['manifest_hash']})")

    def wrong_image_control(self, val: evaluate.Split) -> tuple[dict[str, dict[str, float]], str]:
        """(the wrong-image control of this model, where it comes from): the shipped
        manifest's, else measured now on ``val``."""
        control = self.manifest.get("wrong_image_control")
        if control:
            return control, "shipped manifest"
        return (evaluate.wrong_image_control(self.recipe, self.model, self.task, val.batch),
                f"measured on {len(val)} validation images")


def ship(recipe: Recipe, cfg: Any, run: Any, path: str | Path, control: dict | None = None,
         *, stage: str | None = None, requires: Mapping[str, str] | None = None) -> Path:
    """Writes ``run`` (a :class:`~rlcv_lib.core.pretrain.PretrainResult`) as a shipped
    checkpoint at ``path`` with its manifest and pretraining curve; ``requires`` (a later
    stage's) records the manifest hash of the stage it was made from."""
    records = run.history.records()
    evals = run.history.records("eval")
    extra = {"encoder_init": run.encoder_start} if run.encoder_start else {}
    manifest = checkpoint.make_manifest(
        matching_config(cfg, recipe.train_section), scenes.WORLD_VERSION,
        steps=max((r["step"] for r in records), default=0),
        train_seconds=max([run.seconds] + [r.get("time", 0.0) for r in records]),
        sections=_stage_of(recipe, stage).sections, metrics=_last_metrics(evals),
        metrics_step=evals[-1]["step"] if evals else None,
        task=recipe.name, stage=_stage_of(recipe, stage).name, seed=cfg.run.seed,
        wrong_image_control=control, **({"requires": dict(requires)} if requires else {}),
        **extra)
    path = checkpoint.save_shipped(path, run.model, manifest)
    with open(path / "history.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in run.history.records())
    return path


def _last_metrics(evals: list[dict[str, Any]]) -> dict[str, float]:
    last = evals[-1] if evals else {}
    return {k: v for k, v in last.items()
            if k not in ("kind", "step", "time") and isinstance(v, int | float)}


def final_eval(recipe: Recipe, cfg: Any, run: Any) -> None:
    """Appends an evaluation at the model's last step to ``run.history`` unless it has one (a
    run stopped between evaluations and resumed for zero steps, say)."""
    records = run.history.records()
    last = max((r["step"] for r in records), default=0)
    evals = run.history.records("eval")
    if evals and evals[-1]["step"] == last:
        return
    metrics = recipe.make_evaluator(run.task, run.val)(run.model, last)
    run.history.append({"kind": "eval", "step": last,
                        "time": max(r.get("time", 0.0) for r in records), **metrics})


def run_at_step(recipe: Recipe, cfg: Any, workdir: str | Path, step: int | None,
                cache_dir: str | None = None, eval_examples: int = CONTROL_EXAMPLES
                ) -> PretrainResult:
    """The pretraining run in ``workdir`` as it stood at its checkpoint ``step`` (None: the
    latest): that model and
    the history up to it (one record per kind and step, the latest written), so an earlier
    checkpoint of a longer run can be shipped."""
    model, task, step = restore_model(recipe, cfg, workdir, step=step, cache_dir=cache_dir)
    kept: dict[tuple[str, int], dict[str, Any]] = {}
    for rec in (json.loads(line) for line in open(Path(workdir) / "history.jsonl")):
        if rec["step"] <= step:
            kept[(rec.get("kind", ""), rec["step"])] = rec
    history = History()
    for rec in sorted(kept.values(), key=lambda r: (r["step"], r.get("kind", ""))):
        history.append(rec)
    val = evaluate.load_split(cfg, "validation", eval_examples, cache_dir)
    return PretrainResult(model=model, task=task, history=history, val=val, seconds=0.0,
                          encoder_start=encoder_init.of_run(cfg, workdir))


def ship_run(recipe: Recipe, cfg: Any, workdir: str | Path, *, at: int | None = None,
             out: str | Path | None = None, cache_dir: str | None = None,
             stage: str | None = None) -> Path:
    """Ships a pretraining run of ``workdir``: its latest checkpoint, or the one of step
    ``at``, with a final evaluation and the wrong-image control, to ``out`` (default
    :func:`shipped_path`; an existing checkpoint there is replaced)."""
    import shutil

    run = run_at_step(recipe, cfg, workdir, at, cache_dir)
    final_eval(recipe, cfg, run)
    control = evaluate.wrong_image_control(recipe, run.model, run.task, run.val.batch)
    name = _stage_of(recipe, stage).name
    out = shipped_path(recipe.name, cfg.preset, stage=name) if out is None else Path(out)
    needs = requires(recipe.name, cfg.preset, name)
    if out.exists():
        shutil.rmtree(out)
    return ship(recipe, cfg, run, out, control, stage=name, requires=needs)


def load_or_pretrain(recipe: Recipe, cfg: Any, workdir: str | Path | None, *,
                     path: str | Path | None = None, cache_dir: str | None = None,
                     progress: bool = True, stage: str | None = None,
                     **pretrain_kwargs: Any) -> Pretrained:
    """The shipped MLE model of ``(recipe.name, stage, cfg.preset)`` (or ``path``), or, with
    ``cfg.run.from_scratch`` or when none is shipped, MLE pretraining in ``workdir``. The match
    ignores ``train``'s bookkeeping fields (:func:`matching_config`) and the tasks' tuning
    fields; a later stage must have been made from the shipped stage before it.

    Raises :class:`~rlcv_lib.core.checkpoint.ManifestMismatchError` when a shipped checkpoint
    exists but was made for another config, world or earlier stage (regenerate it with ``make
    pretrain``)."""
    this = _stage_of(recipe, stage)
    default = shipped_path(recipe.name, cfg.preset, stage=this.name)
    path = default if path is None else Path(path)
    if not cfg.run.from_scratch and (path / checkpoint.MANIFEST).exists():
        task = recipe.make_task(cfg, cache_dir)
        model = recipe.model(cfg, task)
        manifest = checkpoint.load_shipped(path, model, matching_config(cfg, recipe.train_section),
                                           scenes.WORLD_VERSION, sections=this.sections)
        check_stage_chain(manifest, recipe.name, cfg.preset, this.name,
                          root=path.parent if path != default else None)
        history = History()
        for rec in (json.loads(line) for line in open(path / "history.jsonl")):
            history.append(rec)
        return Pretrained(model, task, history, "shipped", path, manifest, recipe)
    run = pretrain(recipe, cfg, workdir, cache_dir=cache_dir, progress=progress,
                   **pretrain_kwargs)
    evals = run.history.records("eval")
    manifest = {"steps": evals[-1]["step"] if evals else 0, "train_seconds": run.seconds,
                "metrics": _last_metrics(evals)}
    if run.encoder_start:
        manifest["encoder_init"] = run.encoder_start
    return Pretrained(run.model, run.task, run.history, "trained", None, manifest, recipe)
