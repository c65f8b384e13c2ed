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

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

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
        out |= {k: m[k] for k in ("mAP", "AP50", "recall50", "recall50_gt", "boxes_per_image")}
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
                  on_eval: Callable[[dict[str, Any]], None] | None = None
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
                      then=confidence_lr(dcfg.conf_lr_mult))
    return run, monitor


def tune_and_evaluate(cfg: Any, *, workdir: str | Path | None = None,
                      start: str | Path | None = None, cache_dir: str | None = None,
                      progress: bool = False,
                      on_eval: Callable[[dict[str, Any]], None] | None = None
                      ) -> dict[str, Any]:
    """The detection notebook's main path, without figures or the slower controls (what
    ``python -m rlcv_lib tune detection`` runs): the shipped MLE model (``start``: another
    shipped checkpoint directory; without one, MLE from scratch in ``workdir``),
    :func:`tune_from_mle` (best validation state kept in memory), and the
    test metrics of the MLE model (``MLE_RULE``) and of the tuned model under each score rule.
    Returns ``{"test": {row: metrics}, "curve", "best_step", "tune_seconds",
    "update_seconds", "mle_steps"}``."""
    mle_dir = None if workdir is None else Path(workdir) / "detection_mle"
    pre = shipped.load_or_pretrain(detection_pretrain.RECIPE, cfg, mle_dir, path=start,
                                   cache_dir=cache_dir, progress=progress)
    task, model = pre.task, pre.model
    val = ev.load_split(cfg, "validation", cfg.detection.val_size, cache_dir)
    test_split = ev.load_split(cfg, "test", cfg.run.eval_examples, cache_dir)
    test = {"MLE": dm.evaluate(model, task, test_split, dm.MLE_RULE)[0]}
    run, monitor = tune_from_mle(cfg, model, task, val, cache_dir=cache_dir,
                                 progress=progress, on_eval=on_eval)
    best_step = monitor.restore_best(model)
    tuned_rule = dm.tuned_rule(cfg.detection)
    tuned, _ = dm.evaluate_scored(model, task, test_split, tuned_rule)
    test["tuned"] = tuned[tuned_rule.score]
    for rule in (dm.TUNED_CONF_RULE, dm.TUNED_CLASS_RULE, dm.TUNED_RULE):
        if rule.score != tuned_rule.score:
            test[f"tuned, {rule.score.replace('_', ' ')} score"] = tuned[rule.score]
    return {"test": test, "curve": monitor.history.records(), "best_step": best_step,
            "tune_seconds": run.seconds, "update_seconds": ev.update_seconds(run.history),
            "mle_steps": pre.manifest.get("steps")}
