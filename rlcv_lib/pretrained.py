"""Shipped MLE starting points (DESIGN §4): ``make pretrain`` writes them, notebooks load them.

The paper tunes models that were pretrained by MLE elsewhere; the package ships its cpu preset's
MLE checkpoints the same way. One directory per (task, preset) under ``checkpoints/``::

    checkpoints/detection-cpu/
      variables/        model variables (Orbax, no optimizer state)
      manifest.json     config hash of the MLE sections, world version, commit, steps, seconds,
                        final validation metrics, the wrong-image control
      history.jsonl     the pretraining curve (what the notebook plots)

:func:`load_or_pretrain` is the notebooks' one call: the shipped checkpoint if it exists and its
manifest matches the config (a mismatch is refused, never silently reused), else MLE from
scratch in the workdir (``run.from_scratch=True`` forces that).

``python -m rlcv_lib.pretrained TASK PRESET [key=value ...]`` pretrains and ships one.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from rlcv_lib import checkpoint
from rlcv_lib.data import scenes
from rlcv_lib.history import History
from rlcv_lib.mle_experiment import (
    PretrainResult,
    Recipe,
    pretrain,
    restore_model,
    validation_set,
    wrong_image_control,
)
from rlcv_lib.models import build_model

ROOT = Path(__file__).resolve().parent.parent / "checkpoints"
"""Where shipped checkpoints live (``checkpoints/`` beside the package)."""

TASK_MODULES: dict[str, str] = {
    "detection": "rlcv_lib.detection_experiment",
    "captioning": "rlcv_lib.captioning_experiment",
}
"""Task name -> the module that defines its :class:`~rlcv_lib.mle_experiment.Recipe` ``RECIPE``."""


def recipe_for(task_name: str) -> Recipe:
    if task_name not in TASK_MODULES:
        raise ValueError(f"unknown task {task_name!r}; choose from {sorted(TASK_MODULES)}")
    return importlib.import_module(TASK_MODULES[task_name]).RECIPE


def mle_sections(task_name: str) -> tuple[str, ...]:
    """The config sections that decide what MLE produces (tuning sections excluded)."""
    return ("model", "world", "train", task_name)


BOOKKEEPING_FIELDS = ("num_steps", "log_every", "eval_every", "ckpt_every", "keep_checkpoints")
"""``train`` fields a shipped checkpoint need not match under a constant learning rate: they say
when training stopped and what it logged, not what the model is (the manifest records its steps).
Under a decaying schedule ``num_steps`` shapes the learning rate, so it must match."""


def matching_config(cfg: Any) -> Any:
    """``cfg`` with the bookkeeping fields of its ``train`` section reset to their defaults: what
    a shipped checkpoint's config hash is computed from."""
    ignore = BOOKKEEPING_FIELDS if cfg.train.schedule == "constant" else BOOKKEEPING_FIELDS[1:]
    default = type(cfg.train)()
    train = dataclasses.replace(cfg.train, **{f: getattr(default, f) for f in ignore})
    return cfg.replace(train=train)


def shipped_path(task_name: str, preset: str, root: str | Path | None = None) -> Path:
    return Path(ROOT if root is None else root) / f"{task_name}-{preset}"


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


def ship(recipe: Recipe, cfg: Any, run: Any, path: str | Path, control: dict | None = None,
         ) -> Path:
    """Writes ``run`` (a :class:`~rlcv_lib.mle_experiment.PretrainResult`) as a shipped
    checkpoint at ``path`` with its manifest and pretraining curve."""
    records = run.history.records()
    evals = run.history.records("eval")
    manifest = checkpoint.make_manifest(
        matching_config(cfg), scenes.WORLD_VERSION,
        steps=max((r["step"] for r in records), default=0),
        train_seconds=max([run.seconds] + [r.get("time", 0.0) for r in records]),
        sections=mle_sections(recipe.name), metrics=_last_metrics(evals),
        metrics_step=evals[-1]["step"] if evals else None,
        task=recipe.name, seed=cfg.run.seed, wrong_image_control=control)
    path = checkpoint.save_shipped(path, run.model, manifest)
    with open(path / "history.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in run.history.records())
    return path


def _last_metrics(evals: list[dict[str, Any]]) -> dict[str, float]:
    last = evals[-1] if evals else {}
    return {k: v for k, v in last.items()
            if k not in ("kind", "step", "time") and isinstance(v, int | float)}


def final_eval(recipe: Recipe, cfg: Any, run: Any, cache_dir: str | None = None,
               eval_examples: int = 256) -> None:
    """Appends an evaluation at the model's last step to ``run.history`` unless it has one (a
    run stopped between evaluations and resumed for zero steps, say)."""
    records = run.history.records()
    last = max((r["step"] for r in records), default=0)
    evals = run.history.records("eval")
    if evals and evals[-1]["step"] == last:
        return
    examples, val_batch = validation_set(cfg, eval_examples, cache_dir)
    metrics = recipe.make_evaluator(run.task, examples, val_batch)(run.model, last)
    run.history.append({"kind": "eval", "step": last,
                        "time": max(r.get("time", 0.0) for r in records), **metrics})


def run_at_step(recipe: Recipe, cfg: Any, workdir: str | Path, step: int,
                cache_dir: str | None = None, eval_examples: int = 256) -> PretrainResult:
    """The pretraining run in ``workdir`` as it stood at its checkpoint ``step``: that model and
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
    _, val_batch = validation_set(cfg, eval_examples, cache_dir)
    return PretrainResult(model=model, task=task, history=history, val_batch=val_batch,
                          seconds=0.0)


def load_or_pretrain(recipe: Recipe, cfg: Any, workdir: str | Path | None, *,
                     path: str | Path | None = None, cache_dir: str | None = None,
                     progress: bool = True, **pretrain_kwargs: Any) -> Pretrained:
    """The shipped MLE model of ``(recipe.name, cfg.preset)`` (or ``path``), or, with
    ``cfg.run.from_scratch`` or when none is shipped, MLE pretraining in ``workdir``. The match
    ignores ``train``'s bookkeeping fields (:func:`matching_config`).

    Raises :class:`~rlcv_lib.checkpoint.ManifestMismatchError` when a shipped checkpoint exists
    but was made for another config or world (regenerate it with ``make pretrain``)."""
    path = shipped_path(recipe.name, cfg.preset) if path is None else Path(path)
    if not cfg.run.from_scratch and (path / checkpoint.MANIFEST).exists():
        task = recipe.make_task(cfg, cache_dir)
        model = build_model(cfg.model, task, seed=cfg.run.seed)
        manifest = checkpoint.load_shipped(path, model, matching_config(cfg), scenes.WORLD_VERSION,
                                           sections=mle_sections(recipe.name))
        history = History()
        for rec in (json.loads(line) for line in open(path / "history.jsonl")):
            history.append(rec)
        return Pretrained(model, task, history, "shipped", path, manifest)
    run = pretrain(recipe, cfg, workdir, cache_dir=cache_dir, progress=progress,
                   **pretrain_kwargs)
    evals = run.history.records("eval")
    manifest = {"steps": evals[-1]["step"] if evals else 0, "train_seconds": run.seconds,
                "metrics": _last_metrics(evals)}
    return Pretrained(run.model, run.task, run.history, "trained", None, manifest)


def main(argv: list[str] | None = None) -> None:
    """``python -m rlcv_lib.pretrained TASK PRESET [section.field=value ...] [train_size=N]
    [at=STEP] [out=DIR] [workdir=DIR]``: MLE pretraining in ``runs/pretrain/TASK-PRESET`` (or
    ``workdir``; resumable), the wrong-image control, and the shipped checkpoint
    ``checkpoints/TASK-PRESET`` (or ``out``). ``at=STEP`` trains nothing: it ships that step's
    checkpoint of the run (:func:`run_at_step`)."""
    from rlcv_lib.config import get_config

    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        raise SystemExit("usage: python -m rlcv_lib.pretrained TASK PRESET [key=value ...]")
    task_name, preset, *kv = args
    recipe = recipe_for(task_name)
    overrides = dict(a.split("=", 1) for a in kv)
    train_size = overrides.pop("train_size", None)
    at, out = overrides.pop("at", None), overrides.pop("out", None)
    workdir = Path(overrides.pop("workdir", Path("runs/pretrain") / f"{task_name}-{preset}"))
    cfg = get_config(preset, overrides=overrides)
    cache_dir = str(Path("runs/pretrain/scenes_cache"))
    if at is None:
        run = pretrain(recipe, cfg, workdir, cache_dir=cache_dir,
                       train_size=None if train_size is None else int(train_size))
    else:
        run = run_at_step(recipe, cfg, workdir, int(at), cache_dir)
    final_eval(recipe, cfg, run, cache_dir)
    control = wrong_image_control(recipe, run.model, run.task, run.val_batch)
    out = shipped_path(task_name, preset) if out is None else Path(out)
    if out.exists():
        shutil.rmtree(out)
    ship(recipe, cfg, run, out, control)
    print(json.dumps({"shipped": str(out), **checkpoint.read_manifest(out)}, indent=1))


if __name__ == "__main__":
    main()
