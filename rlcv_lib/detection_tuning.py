"""Detection before and after reward tuning: evaluation rules, the tuning curve, the controls.

What the detection notebook (``03_detection``) calls; the MLE model comes from
:func:`rlcv_lib.pretrained.load_or_pretrain` and the tuning loop from :func:`rlcv_lib.tuning.tune`.

**Decode and score rules** (:class:`Rule`). Every row of the results table is one model under
one rule, always on the same images:

* ``MLE_RULE``: greedy decoding under the grammar; each box scored by the probability of its
  class token (pix2seq's rule: an MLE model's confidence tokens are untrained, its target is
  always "high");
* ``TUNED_RULE``: greedy decoding; each box scored by its class likelihood times its learned
  confidence ``p(conf=2) / (p(conf=1) + p(conf=2))`` at the slot's confidence position (the
  tuned model's estimate of the box's IoU, trained by the confidence loss): "right class and
  well placed". The paper scores by the confidence alone (``TUNED_CONF_RULE``); on the
  32,000-update detector the product ranked the same boxes better on validation and test
  (notes/detection_tuning.md, "The combined score");
* ``PIX2SEQ_RULE`` (control): pix2seq's remedies for an MLE model's low recall: nucleus sampling
  (top-p 0.9) and **no early stop**, i.e. PAD is forbidden at every slot's first token so every
  slot must emit a box (:class:`NoEarlyStop`); boxes scored by class likelihood, so COCO's
  ranking puts the confident ones first;
* ``TUNED_CONF_RULE`` (control): the tuned model scored by its learned confidence alone, the
  paper's rule;
* ``TUNED_CLASS_RULE`` (control): the tuned model scored by class likelihood alone, without its
  learned confidences.

Scores always come from a teacher-forced pass over the decoded tokens under the task's own
grammar (:meth:`rlcv_lib.tasks.detection.DetectionTask.box_scores`); one decode can be scored
by several rules (:func:`predict_scored`), so the three tuned rows rank the same boxes.

**Metrics** (:func:`evaluate`): pycocotools' mAP, AP50, AP75, AP small/medium/large, AR@100 and
per-class recall at IoU 0.5 (``task.evaluate``), predictions per image, and the fraction of all
ground-truth boxes found at IoU 0.5 (``recall50_gt``, the count-bucket matching below).

**Recall by object count** (:func:`recall_by_count`): per image, predictions in decreasing score
take the unmatched ground truth of their class with the highest IoU ≥ 0.5 (COCOeval's greedy
rule at one threshold); recall of a bucket = matched / ground-truth boxes over its images.

**Tuning curve and checkpoint choice** (:class:`TuningMonitor`, the ``eval_fn`` of ``tune``): at
each evaluation, on fixed validation images, the *validation reward* (mean task reward of N
samples per image at temperature 1 with a fixed key: what REINFORCE maximises) and validation mAP
under ``TUNED_RULE`` (plus AP50, recall, boxes per image, and mAP of the same boxes under the
other score rules). The
monitor keeps a copy of the model state with the best validation mAP (``TUNED_RULE``) in memory;
:meth:`TuningMonitor.restore_best` writes it back after tuning: that is the checkpoint choice, made
on validation only. Step 0 is a candidate: the MLE model, whose reset confidence readout gives
every box the same confidence, so that the product ranks its boxes by class likelihood alone.

**MLE for as long as tuning** (:func:`continue_mle`): the MLE step, from the same starting model,
for the same wall-clock seconds that tuning's updates took (:func:`update_seconds`: evaluations
and compilation excluded on both sides); a fresh optimiser as tuning has, ``cfg.train``'s peak lr
held constant after ``cfg.tune``'s warm-up.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rlcv_lib import (
    detection_experiment,
    mle_experiment,
    optim,
    pretrained,
    sampling,
    steps,
    tuning,
)
from rlcv_lib.data import pipeline, sources
from rlcv_lib.history import History
from rlcv_lib.reinforce import RLConfig
from rlcv_lib.rewards import detection as reward_lib
from rlcv_lib.tasks import detection as det

CONTINUE_SEED_OFFSET = 2_000
"""The MLE-as-long control streams training data with ``run.seed + CONTINUE_SEED_OFFSET``."""

TUNE_DEFAULTS: dict[str, dict[str, Any]] = {
    "cpu": {"tune.num_steps": 1500, "tune.eval_every": 250, "tune.ckpt_every": 250,
            "tune.batch_size": 16}}
"""Detection's values of the shared tuning sections, per preset
(:func:`rlcv_lib.tuning.with_task_defaults`; a notebook override of the same key wins). cpu:
1,500 updates of 16 images × N samples (captioning: 400 of 8) at the preset's lr 1e-4, evaluated
every 250. From the 32,000-update detector over seeds 0, 1, 2 (notes/detection_tuning.md): 16
images per update gave test mAP +6.9 ± 0.4 over the MLE model against +5.0 ± 0.2 with 8, and
best validation mAP 52.9 against 52.5 on average, for twice the seconds (checkpoints chosen on
256 validation scenes; on :data:`VAL_SIZE` scenes +6.5 ± 0.2); lr 3e-5 and 2e-4, 32 images for
half the updates and 16 samples of 8 images did no better (seed 0)."""

CONF_LR_MULT = 10.0
"""The confidence readout, re-initialised by :func:`reset_confidence`, learns at this multiple
of ``tune.lr`` (:func:`confidence_lr`). Adafactor moves each weight by about lr per update
whatever the gradient's size, so at lr 1e-4 the readout needs thousands of updates to learn the
IoU scores from zero. At 10× the tuned boxes ranked by their learned confidences beat the same
boxes ranked by class likelihood on 2 of 3 seeds (test mAP +2.2, +0.9, −0.7 after 1,500
updates); at 1× they did not (29.6 vs 29.8, seed 0; notes/detection_tuning.md)."""

VAL_SIZE = 1024
"""Validation scenes the tuning monitor evaluates (at most ``run.eval_examples``): its
validation reward and mAP, hence the checkpoint choice. Over four cpu tuning runs (updates
250–1,500; notes/detection_tuning.md, "Checkpoint choice on 1,024 validation scenes") validation
mAP on 1,024 scenes followed the test mAP of the same states with Pearson r 0.86–0.95, never
more than 1.2 points apart; on 256 scenes (the earlier default) r was 0.30–0.91 and one chosen
state was overestimated by 2.9. The chosen state's test mAP was higher with 1,024 on one run and
lower on two (by up to 1.1, about the test split's own noise between late states)."""

METRICS = ("mAP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR@100", "recall50",
           "recall50_gt", "boxes_per_image", "gt_per_image")
"""The keys of :func:`evaluate`'s metrics."""


# ---------------------------------------------------------------------------------------------
# Decode and score rules


@dataclasses.dataclass(frozen=True)
class Rule:
    """How a model's predictions are made and scored (module docstring)."""

    name: str
    """Shown in tables, e.g. ``"greedy, class score"``."""
    decode: Literal["greedy", "sample"] = "greedy"
    """Greedy (argmax) or sampling at temperature 1 (with ``top_p``)."""
    score: det.ScoreRule = "class"
    """``task.box_scores`` rule: class-token probability, learned confidence, or their
    product."""
    top_p: float = 1.0
    """Nucleus truncation when sampling (1: off)."""
    no_early_stop: bool = False
    """Forbid PAD at slot starts: every slot emits a box (pix2seq's "no EOS")."""

    def __post_init__(self):
        if self.decode not in ("greedy", "sample"):
            raise ValueError(f"Rule.decode must be 'greedy' or 'sample', got {self.decode!r}")
        if self.score not in det.SCORE_RULES:
            raise ValueError(f"Rule.score must be one of {det.SCORE_RULES}, got {self.score!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"Rule.top_p must be in (0, 1], got {self.top_p}")


MLE_RULE = Rule("greedy, class score")
TUNED_RULE = Rule("greedy, class x confidence score", score="class_x_confidence")
TUNED_CONF_RULE = Rule("greedy, confidence score", score="confidence")
TUNED_CLASS_RULE = Rule("greedy, class score", score="class")
PIX2SEQ_RULE = Rule("nucleus 0.9, no early stop, class score", decode="sample", top_p=0.9,
                    no_early_stop=True)


@dataclasses.dataclass(frozen=True)
class NoEarlyStop:
    """The task's grammar with PAD forbidden at each slot's first token (position % 6 == 0):
    no slot can be absent, so all ``num_slots`` slots carry a box. Hashable (equal for the same
    task object), so jitted decoders compile once per task."""

    task: Any

    def __call__(self, position: jax.Array, prev_token: jax.Array) -> jax.Array:
        allowed = self.task.allowed(position, prev_token)  # [..., V]
        slot_start = (jnp.asarray(position) % det.TOKENS_PER_BOX) == 0
        pad = jnp.arange(allowed.shape[-1]) == det.PAD
        return allowed & ~(slot_start[..., None] & pad)


def decode_spec(task: det.DetectionTask, rule: Rule) -> sampling.DecodeSpec:
    """The sampler's static settings for ``rule`` (one sample per image)."""
    allowed = NoEarlyStop(task) if rule.no_early_stop else task.allowed
    return dataclasses.replace(sampling.DecodeSpec.for_task(task), allowed=allowed,
                               top_p=rule.top_p)


def predict_scored(model, task: det.DetectionTask, images: np.ndarray, rule: Rule,
                   scores: Sequence[str] = det.SCORE_RULES, key: jax.Array | None = None,
                   chunk: int = 256) -> tuple[dict[str, list[dict[str, np.ndarray]]], np.ndarray]:
    """({score rule: predictions}, tokens int32 [B,L]): ``images`` [B,H,W,3] decoded once under
    ``rule`` (its ``score`` ignored) and the same boxes scored by each rule in ``scores``;
    ``key`` seeds sampling rules (default ``key(0)``; chunk ``i`` uses ``fold_in(key, i)``)."""
    unknown = [s for s in scores if s not in det.SCORE_RULES]
    if unknown:
        raise ValueError(f"unknown score rules {unknown}: choose from {det.SCORE_RULES}")
    spec = decode_spec(task, rule)
    score_spec = sampling.DecodeSpec.for_task(task)  # scores under the task's own grammar
    key = jax.random.key(0) if key is None else key
    preds: dict[str, list[dict[str, np.ndarray]]] = {s: [] for s in scores}
    all_tokens = []
    for i, lo in enumerate(range(0, len(images), chunk)):
        x = jnp.asarray(images[lo:lo + chunk])
        if rule.decode == "greedy":
            tokens = sampling.greedy_jit(model, x, spec).tokens  # [b,1,L]
        else:
            tokens = sampling.sample_jit(model, x, jax.random.fold_in(key, i), spec).tokens
        lsm = np.asarray(sampling.teacher_forced_jit(model, x, tokens, score_spec)
                         .log_softmax[:, 0])  # [b,L,V]
        tokens = np.asarray(tokens[:, 0])
        all_tokens.append(tokens)
        for s in scores:
            preds[s] += [task.detokenize(t, lp, score_rule=s)
                         for t, lp in zip(tokens, lsm, strict=True)]
    return preds, np.concatenate(all_tokens)


def predict(model, task: det.DetectionTask, images: np.ndarray, rule: Rule,
            key: jax.Array | None = None, chunk: int = 256
            ) -> tuple[list[dict[str, np.ndarray]], np.ndarray]:
    """(predictions, tokens int32 [B,L]) of ``images`` [B,H,W,3] under ``rule``
    (:func:`predict_scored` with the rule's own score)."""
    preds, tokens = predict_scored(model, task, images, rule, (rule.score,), key, chunk)
    return preds[rule.score], tokens


# ---------------------------------------------------------------------------------------------
# Data and metrics


split_set = mle_experiment.split_set
"""The first scenes of a split as examples and one collated batch (capped at the split size)."""


def validation_set(cfg: Any, cache_dir: str | None = None, size: int = VAL_SIZE
                   ) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """The tuning monitor's validation scenes: the first min(``size``, ``run.eval_examples``)
    of the split (:func:`split_set`)."""
    return split_set(cfg, "validation", min(size, cfg.run.eval_examples), cache_dir)


def match_counts(prediction: Mapping[str, np.ndarray], boxes: np.ndarray, labels: np.ndarray,
                 iou_thr: float = 0.5) -> int:
    """Ground-truth boxes ``boxes`` [M,4] (classes ``labels`` [M]) that ``prediction`` finds:
    predictions in decreasing score each take the unmatched same-class ground truth with the
    highest IoU ≥ ``iou_thr`` (ties: the first)."""
    gt_boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    gt_labels = np.asarray(labels).reshape(-1)
    pb = np.asarray(prediction["boxes"], np.float64).reshape(-1, 4)
    if not len(gt_labels) or not len(pb):
        return 0
    iou = reward_lib.pairwise_iou(pb, gt_boxes)  # [P,M]
    iou = np.where(np.asarray(prediction["labels"])[:, None] == gt_labels[None, :], iou, -1.0)
    taken = np.zeros(len(gt_labels), bool)
    for p in np.argsort(-np.asarray(prediction["scores"]), kind="stable"):
        cand = np.where(taken, -1.0, iou[p])
        g = int(np.argmax(cand))
        if cand[g] >= iou_thr:
            taken[g] = True
    return int(taken.sum())


def count_buckets(max_objects: int, num: int = 4) -> list[tuple[int, int]]:
    """Up to ``num`` inclusive ranges of ground-truth counts covering 1..max_objects."""
    if max_objects < 1:
        raise ValueError(f"max_objects must be >= 1, got {max_objects}")
    edges = np.unique(np.linspace(1, max_objects + 1, num + 1).round().astype(int))
    return [(int(lo), int(hi) - 1) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]


def recall_by_count(predictions: Sequence[Mapping[str, np.ndarray]],
                    examples: Sequence[Mapping[str, Any]],
                    buckets: Sequence[tuple[int, int]], iou_thr: float = 0.5
                    ) -> list[dict[str, Any]]:
    """Rows ``{bucket, lo, hi, images, gt, found, recall}`` per inclusive count range of
    ground-truth boxes per image (:func:`match_counts`); recall NaN for an empty bucket."""
    if len(predictions) != len(examples):
        raise ValueError(f"{len(predictions)} predictions for {len(examples)} examples")
    rows = []
    for lo, hi in buckets:
        images = gt = found = 0
        for p, ex in zip(predictions, examples, strict=True):
            k = len(np.asarray(ex["labels"]).reshape(-1))
            if lo <= k <= hi:
                images += 1
                gt += k
                found += match_counts(p, ex["boxes"], ex["labels"], iou_thr)
        rows.append({"bucket": f"{lo}-{hi}" if hi > lo else f"{lo}", "lo": lo, "hi": hi,
                     "images": images, "gt": gt, "found": found,
                     "recall": found / gt if gt else float("nan")})
    return rows


def with_oracle_classes(predictions: Sequence[Mapping[str, np.ndarray]],
                        examples: Sequence[Mapping[str, Any]]) -> list[dict[str, np.ndarray]]:
    """A diagnostic: ``predictions`` with each box's class replaced by the class of the
    ground-truth box it overlaps most (kept where it overlaps none). Boxes and scores are
    unchanged, so the mAP gap to the real predictions is the AP lost to classification."""
    out = []
    for p, ex in zip(predictions, examples, strict=True):
        gt = np.asarray(ex["boxes"], np.float64).reshape(-1, 4)
        labels = np.asarray(p["labels"])
        if len(labels) and len(gt):
            iou = reward_lib.pairwise_iou(np.asarray(p["boxes"], np.float64).reshape(-1, 4), gt)
            truth = np.asarray(ex["labels"]).reshape(-1)[iou.argmax(1)]
            labels = np.where(iou.max(1) > 0, truth, labels).astype(labels.dtype)
        out.append(dict(p, labels=labels))
    return out


def metrics_of(task: det.DetectionTask, predictions: Sequence[Mapping[str, np.ndarray]],
               examples: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """:data:`METRICS` (fractions in [0,1]; -1 where pycocotools has no ground truth)."""
    m = task.evaluate(predictions, examples)
    found = sum(match_counts(p, ex["boxes"], ex["labels"])
                for p, ex in zip(predictions, examples, strict=True))
    n_gt = sum(len(np.asarray(ex["labels"]).reshape(-1)) for ex in examples)
    m["recall50_gt"] = found / n_gt if n_gt else float("nan")
    return {k: m[k] for k in METRICS}


def evaluate(model, task: det.DetectionTask, examples: Sequence[Mapping[str, Any]],
             batch: Mapping[str, np.ndarray], rule: Rule, key: jax.Array | None = None
             ) -> tuple[dict[str, float], list[dict[str, np.ndarray]]]:
    """(:data:`METRICS`, predictions) of ``model`` under ``rule`` on ``examples`` (whose
    collated images are ``batch["image"]``): :func:`evaluate_scored` with the rule's own score."""
    metrics, preds = evaluate_scored(model, task, examples, batch, rule, (rule.score,), key)
    return metrics[rule.score], preds[rule.score]


def evaluate_scored(model, task: det.DetectionTask, examples: Sequence[Mapping[str, Any]],
                    batch: Mapping[str, np.ndarray], rule: Rule,
                    scores: Sequence[str] = det.SCORE_RULES, key: jax.Array | None = None
                    ) -> tuple[dict[str, dict[str, float]],
                               dict[str, list[dict[str, np.ndarray]]]]:
    """({score rule: :data:`METRICS`}, {score rule: predictions}): one decode under ``rule``,
    its boxes ranked by each rule in ``scores`` (:func:`predict_scored`)."""
    preds, _ = predict_scored(model, task, batch["image"], rule, scores, key)
    return {s: metrics_of(task, p, examples) for s, p in preds.items()}, preds


# ---------------------------------------------------------------------------------------------
# The tuning curve and the checkpoint choice


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


def validation_reward(model, task: det.DetectionTask, batch: Mapping[str, np.ndarray],
                      num_samples: int, key: jax.Array, chunk: int = 128) -> float:
    """Mean task reward of ``num_samples`` samples per image (temperature 1, no truncation,
    the task's grammar: the RL protocol) with a fixed ``key``."""
    spec = steps.rl_spec(task, RLConfig(num_samples=num_samples, baseline="none"))
    total, n = 0.0, 0
    for i, lo in enumerate(range(0, len(batch["image"]), chunk)):
        sl = slice(lo, lo + chunk)
        x = jnp.asarray(batch["image"][sl])
        tokens = np.asarray(sampling.sample_jit(model, x, jax.random.fold_in(key, i), spec)
                            .tokens)
        r, _ = task.reward(tokens, {"boxes": batch["boxes"][sl], "labels": batch["labels"][sl]})
        total += float(np.sum(r))
        n += r.size
    return total / n


class TuningMonitor:
    """``eval_fn(model, step) -> metrics`` for :func:`rlcv_lib.tuning.tune` that also keeps the
    best-validation-mAP model state (module docstring). ``seconds`` is the time spent in it."""

    def __init__(self, task: det.DetectionTask, examples: Sequence[Mapping[str, Any]],
                 batch: Mapping[str, np.ndarray], num_samples: int, seed: int,
                 select_rule: Rule = TUNED_RULE,
                 on_eval: Callable[[dict[str, Any]], None] | None = None):
        self.task, self.examples, self.batch = task, list(examples), batch
        self.on_eval = on_eval
        self.num_samples, self.select_rule = num_samples, select_rule
        self.key = jax.random.key(seed)
        self.best_step: int | None = None
        self.best_map = -np.inf
        self.best_state: Any = None
        self.seconds = 0.0
        self.history = History()

    def __call__(self, model, step: int = 0) -> dict[str, float]:
        t0 = time.perf_counter()
        out = {"val_reward": validation_reward(model, self.task, self.batch, self.num_samples,
                                               self.key)}
        chosen = self.select_rule.score
        others = [s for s in det.SCORE_RULES if s != chosen]
        preds, _ = predict_scored(model, self.task, self.batch["image"], self.select_rule,
                                  (chosen, *others))
        m = metrics_of(self.task, preds[chosen], self.examples)
        out |= {k: m[k] for k in ("mAP", "AP50", "recall50", "recall50_gt", "boxes_per_image")}
        for s in others:  # the same greedy boxes, ranked by the other rules
            out[f"mAP_{s}_score"] = self.task.evaluate(preds[s], self.examples)["mAP"]
        if out["mAP"] > self.best_map:
            self.best_map, self.best_step = out["mAP"], int(step)
            self.best_state = jax.tree.map(np.array, nnx.state(model))
        self.history.append({"step": int(step), **out})
        self.seconds += time.perf_counter() - t0
        if self.on_eval is not None:
            self.on_eval({"step": int(step), **out})
        return out

    def restore_best(self, model) -> int:
        """Writes the best state back into ``model``; returns its step."""
        if self.best_state is None:
            raise RuntimeError("TuningMonitor has not evaluated any model yet")
        nnx.update(model, jax.tree.map(jnp.asarray, self.best_state))
        return self.best_step


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation of two equally long series (NaN if either is constant or < 3)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape:
        raise ValueError(f"series of different lengths {x.shape} and {y.shape}")
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


# ---------------------------------------------------------------------------------------------
# MLE trained on for as long as tuning took


def update_seconds(history: History) -> float:
    """Seconds that a run's updates take at its steady rate: its last train step divided by
    the median ``steps_per_s`` of its train records (robust to the first interval's compile
    and to the intervals that hold an evaluation)."""
    recs = [r for r in history.records("train") if r.get("steps_per_s", 0) > 0]
    if not recs:
        raise ValueError("the history holds no train record with steps_per_s")
    return recs[-1]["step"] / float(np.median([r["steps_per_s"] for r in recs]))


def continue_mle(cfg: Any, model, task: det.DetectionTask, seconds: float, *,
                 cache_dir: str | None = None, train_size: int | None = None,
                 max_steps: int | None = None) -> tuple[Any, dict[str, float]]:
    """(a copy of ``model`` trained on by MLE for ``seconds`` of updates, info ``{steps,
    seconds}``). The first update (it compiles) is done but not timed, like
    :func:`update_seconds` on tuning's side. ``cfg.train`` with its peak lr held constant after
    ``cfg.tune``'s warm-up and a fresh optimiser (as tuning starts); data: the training split
    from ``run.seed + CONTINUE_SEED_OFFSET``. The updates run the MLE step's functional form, as
    ``train.fit`` runs tuning's. ``max_steps`` caps the updates (tests)."""
    if seconds < 0:
        raise ValueError(f"seconds must be >= 0, got {seconds}")
    model = nnx.clone(model)
    tcfg = dataclasses.replace(cfg.train, schedule="constant",
                               warmup_steps=cfg.tune.warmup_steps)
    seed = cfg.run.seed + CONTINUE_SEED_OFFSET
    src = sources.open_source("scenes", "train", world=cfg.world, cache_dir=cache_dir,
                              size=train_size)
    loader = pipeline.Loader(src, tcfg.micro_batch_size, seed=seed,
                             max_boxes=cfg.world.max_objects)
    batch_fn = detection_experiment.make_batch_fn(task, loader, seed)
    optimizer = optim.make_optimizer(model, tcfg)
    functional = steps.make_mle_step(task).functional(model, optimizer)  # as fit runs it
    state = functional.state
    key = jax.random.key(seed)

    def update(n: int) -> None:
        nonlocal state
        state, metrics = functional.step(state, batch_fn(n), jax.random.fold_in(key, n))
        jax.block_until_ready(metrics["loss"])

    cap = np.inf if max_steps is None else max_steps
    n, t0 = 0, time.perf_counter()
    if seconds > 0 and cap > 0:
        update(0)  # compiles: not timed
        n, t0 = 1, time.perf_counter()
        while time.perf_counter() - t0 < seconds and n < cap:
            update(n)
            n += 1
    seconds_done = time.perf_counter() - t0
    functional.write_back(state)
    return model, {"steps": n, "seconds": seconds_done}


def wrong_image_rows(control: Mapping[str, Mapping[str, float]]) -> list[dict[str, Any]]:
    """Table rows of a wrong-image control ``{"true": {kind: nll}, "wrong": ..., "gap": ...}``."""
    return [{"token kind": k, "NLL true image": control["true"][k],
             "NLL wrong image": control["wrong"][k], "gap": control["gap"][k]}
            for k in control["true"]]


# ---------------------------------------------------------------------------------------------
# Figures


def before_after_figure(task: det.DetectionTask, examples: Sequence[Mapping[str, Any]],
                        rows: Sequence[tuple[str, Sequence[Mapping[str, np.ndarray]]]],
                        indices: Sequence[int], min_score: float = 0.0):
    """A grid: one row per ``(label, predictions)`` on the same ``examples[indices]`` (Figure
    1a analog); boxes scoring below ``min_score`` are not drawn."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), len(indices), squeeze=False,
                             figsize=(1.9 * len(indices), 2.0 * len(rows)))
    for r, (label, preds) in enumerate(rows):
        for c, i in enumerate(indices):
            task.draw(examples[i], preds[i], ax=axes[r, c], min_score=min_score)
        axes[r, 0].set_ylabel(label, fontsize=8)
    fig.tight_layout()
    return fig


def result_row(name: str, metrics: Mapping[str, float], **extra: Any) -> dict[str, Any]:
    """One row of the results table: percentages for the COCO metrics (0–100 as the paper)."""
    pct = ("mAP", "AP50", "AP75", "AR@100", "recall50", "recall50_gt")
    row = {"row": name} | {k: 100 * metrics[k] for k in pct}
    row |= {"predictions/image": metrics["boxes_per_image"],
            "truth/image": metrics["gt_per_image"]}
    return row | dict(extra)


# ---------------------------------------------------------------------------------------------
# The main path without figures: seed spread and sweeps


def confidence_lr(mult: float) -> Any:
    """The update transformation that gives the confidence readout (the head's columns of the
    tokens 1 and 2, re-initialised by :func:`reset_confidence`) ``mult`` times the learning
    rate; None for 1."""
    if mult == 1:
        return None
    return optim.scale_output_columns((det.CONF_LOW, det.CONF_HIGH), float(mult))


def tune_from_mle(cfg: Any, model, task: det.DetectionTask,
                  val_examples: Sequence[Mapping[str, Any]], val_batch: Mapping[str, np.ndarray],
                  *, conf_lr_mult: float = CONF_LR_MULT, cache_dir: str | None = None,
                  progress: bool = True,
                  on_eval: Callable[[dict[str, Any]], None] | None = None
                  ) -> tuple[tuning.TuneResult, TuningMonitor]:
    """Detection's tuning recipe, shared by the notebook and :func:`tune_and_evaluate`: the
    neutral confidence readout (:func:`reset_confidence`, margin 1), REINFORCE with that readout
    at ``conf_lr_mult`` × lr, and a :class:`TuningMonitor` on the validation scenes (key
    ``run.seed + 7``). ``model`` is tuned in place; the caller restores the chosen state with
    ``monitor.restore_best(model)``."""
    reset_confidence(model, margin=1.0)
    monitor = TuningMonitor(task, val_examples, val_batch, num_samples=cfg.rl.num_samples,
                            seed=cfg.run.seed + 7, on_eval=on_eval)
    run = tuning.tune(detection_experiment.RECIPE, cfg, model, task, None, eval_fn=monitor,
                      cache_dir=cache_dir, progress=progress, then=confidence_lr(conf_lr_mult))
    return run, monitor


def tune_and_evaluate(cfg: Any, *, start: str | Path | None = None,
                      conf_lr_mult: float = CONF_LR_MULT,
                      cache_dir: str | None = None, progress: bool = False,
                      on_eval: Callable[[dict[str, Any]], None] | None = None,
                      val_size: int = VAL_SIZE) -> dict[str, Any]:
    """The detection notebook's main path, without figures or the slower controls: the shipped
    MLE model (``start``: another shipped checkpoint directory), :func:`tune_from_mle` (best
    validation mAP on ``val_size`` scenes kept), and the test metrics of the MLE model
    (``MLE_RULE``), the tuned model (``TUNED_RULE``) and its boxes scored by the confidence
    alone (``TUNED_CONF_RULE``) and by class likelihood (``TUNED_CLASS_RULE``). Returns
    ``{"test": {row: metrics}, "curve", "best_step", "tune_seconds", "update_seconds",
    "mle_steps"}``."""
    pre = pretrained.load_or_pretrain(detection_experiment.RECIPE, cfg, None, path=start,
                                      cache_dir=cache_dir, progress=progress)
    task, model = pre.task, pre.model
    val_examples, val_batch = validation_set(cfg, cache_dir, val_size)
    test_examples, test_batch = split_set(cfg, "test", cfg.run.eval_examples, cache_dir)
    test = {"MLE": evaluate(model, task, test_examples, test_batch, MLE_RULE)[0]}
    run, monitor = tune_from_mle(cfg, model, task, val_examples, val_batch,
                                 conf_lr_mult=conf_lr_mult, cache_dir=cache_dir,
                                 progress=progress, on_eval=on_eval)
    best_step = monitor.restore_best(model)
    tuned, _ = evaluate_scored(model, task, test_examples, test_batch, TUNED_RULE)
    test["tuned"] = tuned[TUNED_RULE.score]
    test["tuned, confidence score"] = tuned[TUNED_CONF_RULE.score]
    test["tuned, class score"] = tuned[TUNED_CLASS_RULE.score]
    return {"test": test, "curve": monitor.history.records(), "best_step": best_step,
            "tune_seconds": run.seconds, "update_seconds": update_seconds(run.history),
            "mle_steps": pre.manifest.get("steps")}


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m rlcv_lib.detection_tuning PRESET WORKDIR SEED [SEED ...] [start=DIR]
    [conf_lr_mult=X] [val_size=N] [key=value ...]``: :func:`tune_and_evaluate` for each seed
    (scenes cached in ``WORKDIR/scenes_cache`` unless ``cache=DIR``; ``val_size``: the
    monitor's validation scenes, default :data:`VAL_SIZE`); prints each validation evaluation
    and each seed's test rows as JSON lines, and writes ``WORKDIR/seed<N>.json``."""
    import sys

    from rlcv_lib.config import get_config

    args = list(sys.argv[1:] if argv is None else argv)
    kv = dict(a.split("=", 1) for a in args if "=" in a)
    pos = [a for a in args if "=" not in a]
    if len(pos) < 3:
        raise SystemExit("usage: python -m rlcv_lib.detection_tuning PRESET WORKDIR SEED "
                         "[SEED ...] [start=DIR] [cache=DIR] [conf_lr_mult=X] [val_size=N] "
                         "[section.field=value ...]")
    preset, workdir, *seeds = pos
    start, cache = kv.pop("start", None), kv.pop("cache", None)
    conf_lr_mult = float(kv.pop("conf_lr_mult", CONF_LR_MULT))
    val_size = int(kv.pop("val_size", VAL_SIZE))
    root = Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    cache_dir = cache or str(root / "scenes_cache")
    t0 = time.perf_counter()
    for seed in seeds:
        cfg = tuning.with_task_defaults(get_config(preset, {**kv, "run.seed": int(seed)}),
                                       TUNE_DEFAULTS, kv)

        def show(record: dict[str, Any], seed: str = seed) -> None:
            print(json.dumps({"seed": int(seed), "wall_s": round(time.perf_counter() - t0, 1),
                              "eval": record}, default=float), flush=True)

        out = tune_and_evaluate(cfg, start=start, conf_lr_mult=conf_lr_mult,
                                cache_dir=cache_dir, on_eval=show, val_size=val_size)
        out |= {"seed": int(seed), "overrides": kv, "start": start, "conf_lr_mult": conf_lr_mult,
                "val_size": val_size}
        (root / f"seed{seed}.json").write_text(json.dumps(out, indent=1, default=float))
        for row, metrics in out["test"].items():
            print(json.dumps({"seed": int(seed), "row": row, "best_step": out["best_step"],
                              **{k: round(100 * metrics[k], 2) for k in
                                 ("mAP", "AP50", "AP75", "AR@100", "recall50_gt")},
                              "boxes_per_image": round(metrics["boxes_per_image"], 3)}),
                  flush=True)


if __name__ == "__main__":
    main()
