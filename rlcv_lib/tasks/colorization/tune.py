"""Colorization reward tuning: colourfulness, plain and guarded, from one UViM stage II model.

The experiment on the scenes world (what notebook ``05_colorization`` and ``python -m rlcv_lib
tune colorization`` run)::

    pre = shipped.load_or_pretrain(STAGE2_RECIPE, cfg, workdir / "mle")   # stage II by MLE
    result = tune_and_evaluate(cfg, workdir=workdir, pre=pre)

* **Two runs from one MLE model** (:data:`RUNS`): ``tuned``, whose reward is the decoded image's
  colourfulness (the paper's), and ``guarded``, the same minus ``colorization.guard_weight`` per
  dB of luma PSNR below ``colorization.guard_luma_psnr`` (a colourizer that alters the image it
  was given pays for it). Both see the same batches and draw ``rl.num_samples`` codes per image
  at temperature 1 (leave-one-out baseline).
* **Judges beside the reward** (:func:`judge_images`): colourfulness (on [−1, 1], and on 0–255),
  the luma PSNR of the decoded image against the grey input, the colour PSNR against the true
  colours (low for any colourizer of a world whose colours are drawn at random; read it beside
  the references' rows), and the in-palette rate (the share of annotated pixels within
  ``colorization.in_palette_tolerance`` of a colour their region can be drawn in), and colour
  diversity: the entropy of the pixels' hues over all images and the share of the most common
  hue (a colourizer that paints every scene in the same two vivid hues is saturated and in
  palette, and not what a user asked for).
* **Curve and checkpoint choice** (:func:`make_tune_eval`): on ``colorization.val_size``
  validation scenes every ``tune.eval_every`` updates, the mean reward of ``rl.num_samples``
  samples per image (a fixed key) and the judges of the first sample; the chosen checkpoint is
  the most colourful one among those that keep the validation luma PSNR within
  ``colorization.select_luma_drop`` dB of the MLE model's and an in-palette rate not below its
  (``select``; the MLE model, step 0, is a candidate). The test split is not read while
  choosing.
* **Rows** (:func:`evaluate_models`): each model greedy and at temperature 1 (one sample per
  test image, a fixed key): greedy decoding is the near-zero-temperature decoding that gave
  UViM's released colorizer grey images (big_vision issue #19); beside them the reference
  rows truth, dull bound and best in-palette recolouring
  (:mod:`rlcv_lib.tasks.colorization.references`), the control ``MLE as long``, and each run's
  last update (``"<run>, last update"``, a diagnostic: what the reward alone made of the model
  where the choice fell elsewhere).
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from rlcv_lib.core import evaluate as ev
from rlcv_lib.core import shipped
from rlcv_lib.core import tune as tuning
from rlcv_lib.tasks.colorization import pretrain as cp
from rlcv_lib.tasks.colorization import references as refs
from rlcv_lib.tasks.colorization import task as col
from rlcv_lib.tasks.colorization.reward import colourfulness, colourfulness_reward, to_255_scale
from rlcv_lib.tasks.uvim import stage2

RUNS = ("tuned", "guarded")
"""The two tunings: colourfulness alone, and colourfulness with the luma guard."""
MLE_AS_LONG = "MLE as long"
"""The control trained on by MLE for the seconds of updates the plain tuning took."""
PSNR_CAP = 100.0
"""dB: PSNRs are capped here before averaging (the truth against itself would be infinite)."""
DECODINGS = {"greedy": None, "T=1": 1}
"""Test decodings: greedy (the near-zero-temperature mode), one sample at temperature 1."""


def run_dirs(workdir: str | Path) -> dict[str, Path]:
    """Where the parts of :func:`tune_and_evaluate` live under ``workdir``."""
    root = Path(workdir)
    return {"mle": root / "colorization_stage2", "cache": root / "scenes_cache",
            **{name: root / f"colorization_tune_{name}" for name in RUNS}}


def guarded_score(guard_psnr: float, weight: float, luma: str = "bt601"
                  ) -> Callable[[Mapping[str, np.ndarray], Mapping[str, np.ndarray]], np.ndarray]:
    """The guarded reward (module docstring) as a stage II score."""

    def score(outputs, batch):
        pred = np.clip(outputs["rgb"], -1, 1)
        deficit = np.maximum(0.0, guard_psnr - cp.luma_psnr(pred, batch["context"], luma))
        return colourfulness_reward(pred) - weight * deficit

    return score


def task_for_run(task: stage2.Stage2Task, cfg: Any, name: str) -> stage2.Stage2Task:
    """The stage II task whose reward run ``name`` of :data:`RUNS` maximises."""
    if name == "tuned":
        return task
    if name == "guarded":
        c = cfg.colorization
        return dataclasses.replace(task, score=guarded_score(c.guard_luma_psnr, c.guard_weight,
                                                              c.luma))
    raise ValueError(f"unknown run {name!r}; choose one of {list(RUNS)}")


def judge_images(pred: np.ndarray, batch: Mapping[str, np.ndarray], split: ev.Split, cfg: Any
                 ) -> dict[str, float]:
    """The judges (module docstring) of decoded images ``pred`` [B,H,W,3] of ``split``'s scenes,
    with their stage II ``batch``: ``colourfulness``, ``colourfulness_255``, ``luma_psnr``,
    ``psnr`` (dB, each image's capped at :data:`PSNR_CAP`), ``in_palette`` (percent), and the
    colour diversity over all the images' pixels (:func:`~rlcv_lib.tasks.colorization.
    references.hue_shares`): ``hue_entropy`` (bits) and ``top_hue_share`` (percent of the pixels
    in the most common hue)."""
    pred = np.clip(np.asarray(pred, np.float32), -1, 1)
    truth = batch["rgb"]
    segments = [e["segments"] for e in split.examples]
    dist = refs.palette_distance(pred, truth, split.batch["panoptic"], segments, cfg.world)
    m = colourfulness(pred.astype(np.float64))
    hues = refs.hue_shares(pred)
    return {"colourfulness": float(m.mean()), "colourfulness_255": float(to_255_scale(m).mean()),
            "luma_psnr": float(np.mean(np.minimum(PSNR_CAP, cp.luma_psnr(
                pred, batch["context"], cfg.colorization.luma)))),
            "psnr": float(np.mean(np.minimum(PSNR_CAP, col.psnr(pred, truth)))),
            "in_palette": 100 * float(np.nanmean(refs.in_palette_rate(
                dist, cfg.colorization.in_palette_tolerance))),
            "hue_entropy": refs.entropy_bits(hues),
            "top_hue_share": 100 * max(v for k, v in hues.items() if k != refs.NEUTRAL)}


def selection(metrics: Mapping[str, float], floor: Mapping[str, float]) -> float:
    """The checkpoint-choice value of one validation evaluation: its sampled colourfulness when
    it keeps the luma PSNR and the in-palette rate at their floors, else −1 (below every
    colourfulness, so never preferred to the MLE model)."""
    ok = (metrics["luma_psnr"] >= floor["luma_psnr"]
          and metrics["in_palette"] >= floor["in_palette"])
    return float(metrics["colourfulness"]) if ok else -1.0


def make_tune_eval(task: stage2.Stage2Task, val: ev.Split, cfg: Any, key: jax.Array,
                   keeper: ev.BestState | None = None, floor: Mapping[str, float] | None = None):
    """``fn(model, step) -> metrics`` on ``val``: ``reward_sampled`` (the mean reward of
    ``task``, the plain colourfulness, of ``rl.num_samples`` samples per image drawn with
    ``key``; the guarded run's own reward adds its luma penalty), the judges of each image's
    first sample, the greedy decoding's colourfulness
    (``colourfulness_greedy``), and with ``floor`` the checkpoint choice's ``select``
    (:func:`selection`), offered to ``keeper``."""
    batch = task.batch(val.batch)

    def evaluate(model, step: int = 0) -> dict[str, float]:
        samples = ev.sample(model, task, batch["image"], cfg.rl.num_samples, key)
        decoded = task.decode(samples, batch["context"])["rgb"]  # [B,N,H,W,3], decoded once
        rewards = task.score({"rgb": decoded.reshape(-1, *decoded.shape[2:])}, {})
        first = decoded[:, 0]
        greedy = task.decode(ev.decode(model, task, batch["image"]), batch["context"])["rgb"]
        metrics = {"reward_sampled": float(rewards.mean()),
                   **judge_images(first, batch, val, cfg),
                   "colourfulness_greedy": float(colourfulness(np.clip(greedy, -1, 1)).mean())}
        if floor is not None:
            metrics["select"] = selection(metrics, floor)
            if keeper is not None:
                keeper.offer(model, step, metrics)
        return metrics

    return evaluate


def tune_and_select(cfg: Any, model, task: stage2.Stage2Task, workdir: str | Path, name: str,
                    val: ev.Split, floor: Mapping[str, float], *, key: jax.Array,
                    cache_dir: str | None = None, progress: bool = True) -> tuning.Tuned:
    """Run ``name`` of :data:`RUNS` from ``model`` (in place) in ``workdir`` (resumable), then
    the checkpoint chosen on validation (module docstring) loaded into ``model``."""
    return tuning.tune_and_select(
        cp.STAGE2_RECIPE, cfg, model, task_for_run(task, cfg, name), workdir, name=name,
        select_on="select",
        make_eval=lambda keeper: make_tune_eval(task, val, cfg, key, keeper, floor),
        cache_dir=cache_dir, progress=progress, desc=f"colorization REINFORCE ({name})")


def reference_rows(test: ev.Split, batch: Mapping[str, np.ndarray], cfg: Any
                   ) -> dict[str, np.ndarray]:
    """The reference images of the test scenes: ``truth``, ``dull bound`` and ``best in-palette
    recolouring`` (float [B,H,W,3] on [−1, 1])."""
    truth = batch["rgb"]
    pan, segments = test.batch["panoptic"], [e["segments"] for e in test.examples]
    ceiling, _ = refs.best_recolouring(truth, pan, segments, cfg.world)
    return {"truth": truth, "dull bound": refs.dull_bound(truth, pan, segments, cfg.world),
            "best in-palette recolouring": ceiling}


def evaluate_models(models: Mapping[str, Any], task: stage2.Stage2Task, test: ev.Split, cfg: Any,
                    key: jax.Array) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """(rows, images): the judges of the reference rows and of every model by every decoding
    of :data:`DECODINGS` on ``test``; ``images[name]`` the decoded test images of each row."""
    batch = task.batch(test.batch)
    images = dict(reference_rows(test, batch, cfg))
    rows = [{"model": name, "decoding": "reference", **judge_images(x, batch, test, cfg)}
            for name, x in images.items()]
    for name, model in models.items():
        for decoding, temperature in DECODINGS.items():
            if temperature is None:
                tokens = ev.decode(model, task, batch["image"])
            else:
                tokens = ev.sample(model, task, batch["image"], 1, key)[:, 0]
            pred = np.clip(task.decode(tokens, batch["context"])["rgb"], -1, 1)
            images[f"{name}, {decoding}"] = pred
            rows.append({"model": name, "decoding": decoding,
                         **judge_images(pred, batch, test, cfg)})
    return rows, images


@dataclasses.dataclass
class ColorizationTuning:
    """What :func:`tune_and_evaluate` trained and measured."""

    pre: shipped.Pretrained
    val: ev.Split
    floor: dict[str, float]
    """The MLE model's validation luma PSNR (minus ``select_luma_drop``) and in-palette rate:
    the checkpoint choice's floors."""
    runs: dict[str, tuning.Tuned]
    test: ev.Split
    rows: list[dict[str, Any]]
    images: dict[str, np.ndarray]
    """Decoded test images by ``"<model>, <decoding>"`` and the reference rows by name."""
    controls: dict[str, Any] = dataclasses.field(default_factory=dict)
    control_info: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)

    @property
    def models(self) -> dict[str, Any]:
        """Every model of the table: MLE, the controls, each run's chosen checkpoint, and each
        run's last update (``"<run>, last update"``: a diagnostic, not chosen on validation;
        the same model when the choice fell on it)."""
        last = {f"{n}, last update": r.last for n, r in self.runs.items() if r.last is not None}
        return {"MLE": self.pre.model, **self.controls,
                **{n: r.model for n, r in self.runs.items()}, **last}

    def summary(self) -> dict[str, Any]:
        """The JSON-able result (what ``python -m rlcv_lib tune colorization`` writes)."""
        return {"test": {f"{r['model']}, {r['decoding']}": r for r in self.rows},
                "gain_over": "MLE, T=1",  # the row a seed spread's gains are measured from
                "best_step": {n: r.best_step for n, r in self.runs.items()},
                "tune_seconds": {n: r.seconds for n, r in self.runs.items()},
                "floor": self.floor, "controls": self.control_info,
                "curve": [{"model": r.name, **e} for r in self.runs.values()
                          for e in r.history.records("eval")],
                "mle_source": self.pre.source, "mle_encoder": self.pre.encoder_start}


def tune_and_evaluate(cfg: Any, *, workdir: str | Path, pre: shipped.Pretrained | None = None,
                      start: str | Path | None = None, cache_dir: str | None = None,
                      progress: bool = False,
                      on_eval: Callable[[dict[str, Any]], None] | None = None,
                      mesh: Any = None) -> ColorizationTuning:
    """Colorization's main path: the stage II MLE model (``pre``, else the shipped one or
    ``start``; without one, MLE in ``workdir``), both runs of :data:`RUNS` with their
    checkpoints chosen on validation, the control ``MLE as long`` (with
    ``colorization.mle_as_long``) and the test rows (:func:`evaluate_models`). ``on_eval``
    sees every validation evaluation after each run. ``mesh`` is accepted for the command
    line's signature; colorization tunes on one device."""
    del mesh
    dirs = run_dirs(workdir)
    if pre is None:
        pre = shipped.load_or_pretrain(cp.STAGE2_RECIPE, cfg, dirs["mle"], path=start,
                                       cache_dir=cache_dir, progress=progress)
    val = ev.load_split(cfg, "validation", cfg.colorization.val_size, cache_dir)
    key = jax.random.key(ev.seed_for(cfg.run.seed, "eval"))
    mle = make_tune_eval(pre.task, val, cfg, key)(pre.model)
    floor = {"luma_psnr": mle["luma_psnr"] - cfg.colorization.select_luma_drop,
             "in_palette": mle["in_palette"]}
    runs = {}
    for name in RUNS:
        shutil.rmtree(dirs[name], ignore_errors=True)  # a result never comes from older code
        runs[name] = tune_and_select(cfg, nnx.clone(pre.model), pre.task, dirs[name], name, val,
                                     floor, key=key, cache_dir=cache_dir, progress=progress)
        if on_eval is not None:
            for e in runs[name].history.records("eval"):
                on_eval({"model": name, **e})
    controls, info = {}, {}
    if cfg.colorization.mle_as_long:
        seconds = ev.update_seconds(runs["tuned"].history)
        controls[MLE_AS_LONG], info[MLE_AS_LONG] = ev.continue_mle(
            cp.STAGE2_RECIPE, cfg, pre.model, pre.task, seconds, cache_dir=cache_dir)
    test = ev.load_split(cfg, "test", cfg.run.eval_examples, cache_dir)
    result = ColorizationTuning(pre, val, floor, runs, test, [], {}, controls, info)
    result.rows, result.images = evaluate_models(result.models, pre.task, test, cfg, key)
    return result
