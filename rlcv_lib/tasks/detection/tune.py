"""Detection's reward tuning: the recipe, the tuning monitor and the main path.

The MLE model comes from :func:`rlcv_lib.core.shipped.load_or_pretrain`, the tuning loop from
:func:`rlcv_lib.core.tune.tune`, the rules and metrics from
:mod:`rlcv_lib.tasks.detection.metrics`. The knobs are fields of the ``detection`` config
section (``val_size``, ``select_on``, ``tuned_score``, ``conf_reset_margin``, ``conf_lr_mult``)
and detection's own ``tune`` presets (:data:`rlcv_lib.tasks.detection.task.TUNE_PRESETS`).

**Tuning curve and checkpoint choice** (:class:`TuningMonitor`, the ``eval_fn`` of ``tune``): at
each evaluation, on ``detection.val_size`` fixed validation scenes, the *validation reward*
(mean task reward of N samples per image at temperature 1 with a fixed key: what REINFORCE
maximises) and validation mAP of greedy decoding under the tuned rule (plus AP50, recall, boxes
per image, and mAP of the same boxes under the other score rules). A
:class:`~rlcv_lib.core.evaluate.BestState` keeps the state with the best ``detection.select_on``
in memory; :meth:`TuningMonitor.restore_best` writes it back after tuning: that is the
checkpoint choice, made on validation only. Step 0 is a candidate: the MLE model, whose reset
confidence readout gives every box the same confidence, so that the product ranks its boxes by
class likelihood alone.

**MLE for as long as tuning** (:func:`rlcv_lib.core.evaluate.continue_mle`): the MLE step from
the same starting model for the seconds that tuning's updates took.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rlcv_lib.core import evaluate as ev
from rlcv_lib.core import optim, shipped
from rlcv_lib.core import tune as tuning
from rlcv_lib.core.history import History
from rlcv_lib.tasks.detection import metrics as dm
from rlcv_lib.tasks.detection import pretrain as detection_pretrain
from rlcv_lib.tasks.detection import task as det


def reset_confidence(model, margin: float = 0.0) -> None:
    """Zeroes the output head's weights of the confidence tokens 1 and 2 and sets their biases to
    (0, ``margin``), in place: p(2) = sigmoid(margin) at every confidence position, whatever the
    image (margin 0: 1/2; margin > 0 keeps greedy decoding on token 2, the MLE model's only
    confidence input, at the price of a less uniform start). The grammar allows
    these tokens only at confidence positions (and only them there), so every other token's
    distribution is unchanged.

    Why: the MLE target of every ground-truth box's confidence is 2, so an MLE model is
    certain of it (NLL ≈ 1e-5). The confidence loss's first targets (mostly low IoU) then have a
    cross-entropy of many nats whose gradient, through the shared decoder, dominates the first
    updates of tuning and degrades the boxes (notes/detection_tuning.md). From the reset the
    loss starts at ln 2 per box."""
    head = model.decoder.head
    idx = jnp.array([det.CONF_LOW, det.CONF_HIGH])
    head.kernel[...] = head.kernel[...].at[:, idx].set(0.0)
    head.bias[...] = head.bias[...].at[idx].set(jnp.array([0.0, margin]))


def confidence_lr(mult: float) -> Any:
    """The update transformation that gives the confidence readout (the head's columns of the
    tokens 1 and 2, re-initialised by :func:`reset_confidence`) ``mult`` times the learning
    rate; None for 1."""
    if mult == 1:
        return None
    return optim.scale_output_columns((det.CONF_LOW, det.CONF_HIGH), float(mult))


def validation_reward(model, task: det.DetectionTask, batch: Mapping[str, np.ndarray],
                      num_samples: int, key: jax.Array) -> float:
    """Mean task reward of ``num_samples`` samples per image (the RL protocol:
    :func:`rlcv_lib.core.evaluate.sample`) with a fixed ``key``."""
    tokens = ev.sample(model, task, batch["image"], num_samples, key)
    rewards, _ = task.reward(tokens, {"boxes": batch["boxes"], "labels": batch["labels"]})
    return float(np.mean(rewards))


class TuningMonitor:
    """``eval_fn(model, step) -> metrics`` for :func:`rlcv_lib.core.tune.tune` that also keeps
    the best validation state (module docstring). ``seconds`` is the time spent in it."""

    def __init__(self, task: det.DetectionTask, val: ev.Split, num_samples: int, seed: int,
                 select_rule: dm.Rule = dm.TUNED_RULE, select_on: str = "mAP",
                 on_eval: Callable[[dict[str, Any]], None] | None = None):
        self.task, self.val = task, val
        self.on_eval = on_eval
        self.num_samples, self.select_rule = num_samples, select_rule
        self.key = jax.random.key(seed)
        self.best = ev.BestState(select_on)
        self.seconds = 0.0
        self.history = History()

    def __call__(self, model, step: int = 0) -> dict[str, float]:
        t0 = time.perf_counter()
        out = {"val_reward": validation_reward(model, self.task, self.val.batch,
                                               self.num_samples, self.key)}
        chosen = self.select_rule.score
        others = [s for s in det.SCORE_RULES if s != chosen]
        preds, _ = dm.predict_scored(model, self.task, self.val.batch["image"],
                                     self.select_rule, (chosen, *others))
        m = dm.metrics_of(self.task, preds[chosen], self.val.examples)
        out |= {k: m[k] for k in ("mAP", "AP50", "recall50", "recall50_gt", "boxes_per_image",
                                "duplicates_per_image")}
        for s in others:  # the same greedy boxes, ranked by the other rules
            out[f"mAP_{s}_score"] = self.task.evaluate(preds[s], self.val.examples)["mAP"]
        self.best.offer(model, step, out)
        self.history.append({"step": int(step), **out})
        self.seconds += time.perf_counter() - t0
        if self.on_eval is not None:
            self.on_eval({"step": int(step), **out})
        return out

    @property
    def best_step(self) -> int | None:
        return self.best.step

    @property
    def best_value(self) -> float:
        return self.best.value

    def restore_best(self, model) -> int:
        """Writes the best state back into ``model``; returns its step."""
        return self.best.restore(model)


def tune_from_mle(cfg: Any, model, task: det.DetectionTask, val: ev.Split, *,
                  cache_dir: str | None = None, progress: bool = True,
                  on_eval: Callable[[dict[str, Any]], None] | None = None,
                  mesh: jax.sharding.Mesh | None = None
                  ) -> tuple[tuning.TuneResult, TuningMonitor]:
    """Detection's tuning recipe, shared by the notebook and :func:`tune_and_evaluate`: the
    neutral confidence readout (:func:`reset_confidence`, ``detection.conf_reset_margin``),
    REINFORCE with that readout at ``detection.conf_lr_mult`` × lr, and a
    :class:`TuningMonitor` on ``val`` (key ``seed_for(run.seed, "eval")``). ``model`` is tuned
    in place; the caller restores the chosen state with ``monitor.restore_best(model)``."""
    dcfg = cfg.detection
    reset_confidence(model, margin=dcfg.conf_reset_margin)
    monitor = TuningMonitor(task, val, num_samples=cfg.rl.num_samples,
                            seed=ev.seed_for(cfg.run.seed, "eval"),
                            select_rule=dm.tuned_rule(dcfg), select_on=dcfg.select_on,
                            on_eval=on_eval)
    run = tuning.tune(detection_pretrain.RECIPE, cfg, model, task, None, eval_fn=monitor,
                      cache_dir=cache_dir, progress=progress,
                      then=confidence_lr(dcfg.conf_lr_mult), mesh=mesh)
    return run, monitor


@dataclasses.dataclass
class DetectionTuning:
    """What :func:`tune_and_evaluate` trained and measured."""

    pre: shipped.Pretrained
    """The MLE starting point (its curve, manifest and wrong-image control)."""
    mle_model: Any
    """The MLE model, unchanged."""
    model: Any
    """The tuned model, with the state chosen on validation restored."""
    run: tuning.TuneResult
    monitor: TuningMonitor
    """The validation curve (``monitor.history``) and the checkpoint choice."""
    test: ev.Split
    metrics: dict[str, dict[str, float]]
    """Test rows: ``"MLE"`` (``MLE_RULE``), ``"tuned"`` (``detection.tuned_score``) and the
    tuned boxes under each other score rule (``"tuned, <rule> score"``)."""
    predictions: dict[str, list[dict[str, np.ndarray]]]
    """The test predictions of each row."""
    best_step: int

    def summary(self) -> dict[str, Any]:
        """The JSON-able result (what ``python -m rlcv_lib tune detection`` writes)."""
        return {"test": self.metrics, "curve": self.monitor.history.records(),
                "best_step": self.best_step, "tune_seconds": self.run.seconds,
                "update_seconds": ev.update_seconds(self.run.history),
                "mle_steps": self.pre.manifest.get("steps"), "mle_source": self.pre.source,
                "mle_encoder": self.pre.encoder_start}


def tune_and_evaluate(cfg: Any, *, pre: shipped.Pretrained | None = None,
                      workdir: str | Path | None = None, start: str | Path | None = None,
                      cache_dir: str | None = None, progress: bool = False,
                      on_eval: Callable[[dict[str, Any]], None] | None = None,
                      mesh: jax.sharding.Mesh | None = None) -> DetectionTuning:
    """Detection's main path, what notebook ``03_detection`` and ``python -m rlcv_lib tune
    detection`` run: the MLE model (``pre``, else the shipped one or ``start``, another shipped
    checkpoint directory; without one, MLE from scratch in ``workdir``), its test metrics,
    :func:`tune_from_mle` (best validation state kept in memory and restored), and the tuned
    model's test metrics under every score rule (one decode). The test split is read once per
    row, after all choices. ``mesh``: data-parallel tuning over its devices."""
    if pre is None:
        mle_dir = None if workdir is None else Path(workdir) / "detection_mle"
        pre = shipped.load_or_pretrain(detection_pretrain.RECIPE, cfg, mle_dir, path=start,
                                       cache_dir=cache_dir, progress=progress)
    task, model = pre.task, pre.model
    mle_model = nnx.clone(model)  # pre.model is tuned in place
    val = ev.load_split(cfg, "validation", cfg.detection.val_size, cache_dir)
    test = ev.load_split(cfg, "test", cfg.run.eval_examples, cache_dir)
    mle_metrics, mle_preds = dm.evaluate(mle_model, task, test, dm.MLE_RULE)
    run, monitor = tune_from_mle(cfg, model, task, val, cache_dir=cache_dir,
                                 progress=progress, on_eval=on_eval, mesh=mesh)
    best_step = monitor.restore_best(model)
    rule = dm.tuned_rule(cfg.detection)
    tuned, tuned_preds = dm.evaluate_scored(model, task, test, rule)  # one decode, every score
    metrics, preds = {"MLE": mle_metrics, "tuned": tuned[rule.score]}, {
        "MLE": mle_preds, "tuned": tuned_preds[rule.score]}
    for score in det.SCORE_RULES:
        if score != rule.score:
            name = f"tuned, {score.replace('_', ' ')} score"
            metrics[name], preds[name] = tuned[score], tuned_preds[score]
    return DetectionTuning(pre, mle_model, model, run, monitor, test, metrics, preds, best_step)
