"""Detection's evaluation: decode and score rules, the COCO metrics, recall by object count.

**Decode and score rules** (:class:`Rule`). Every row of the results table is one model under
one rule, always on the same images:

* ``MLE_RULE``: greedy decoding under the grammar; each box scored by the probability of its
  class token (pix2seq's rule: an MLE model's confidence tokens are untrained, its target is
  always "high");
* ``TUNED_RULE``: greedy decoding; each box scored by its class likelihood times its learned
  confidence ``p(conf=2) / (p(conf=1) + p(conf=2))`` at the slot's confidence position (the
  tuned model's estimate of the box's IoU, trained by the confidence loss): "right class and
  well placed". The paper scores by the confidence alone (``TUNED_CONF_RULE``). Which score the
  tuned model is read with is the config field ``detection.tuned_score`` (:func:`tuned_rule`);
* ``PIX2SEQ_RULE`` (control): pix2seq's remedies for an MLE model's low recall: nucleus sampling
  (top-p 0.9) and **no early stop**, i.e. PAD is forbidden at every slot's first token so every
  slot must emit a box (:class:`NoEarlyStop`); boxes scored by class likelihood, so COCO's
  ranking puts the confident ones first;
* ``TUNED_CONF_RULE``, ``TUNED_CLASS_RULE`` (controls): the tuned model's boxes scored by its
  learned confidence alone (the paper's rule) or by class likelihood alone.

Scores always come from a teacher-forced pass over the decoded tokens under the task's own
grammar (:meth:`rlcv_lib.tasks.detection.task.DetectionTask.box_scores`); one decode can be
scored by several rules (:func:`predict_scored`), so the tuned rows rank the same boxes.

**Metrics** (:func:`metrics_of`): pycocotools' mAP, AP50, AP75, AP small/medium/large, AR@100
and per-class recall at IoU 0.5 (``task.evaluate``), predictions per image, and the fraction of
all ground-truth boxes found at IoU 0.5 (``recall50_gt``, the count-bucket matching below) and
duplicate boxes per image (``duplicates_per_image``: boxes on an object another, higher-scored
box of the same class already found; :func:`greedy_match`), the judge of the reward's duplicate
penalty.

**Recall by object count** (:func:`recall_by_count`): per image, predictions in decreasing score
take the unmatched ground truth of their class with the highest IoU ≥ 0.5 (COCOeval's greedy
rule at one threshold); recall of a bucket = matched / ground-truth boxes over its images.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from rlcv_lib.core import evaluate as ev
from rlcv_lib.core import sampling
from rlcv_lib.tasks.detection import reward as reward_lib
from rlcv_lib.tasks.detection import task as det

METRICS = ("mAP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR@100", "recall50",
           "recall50_gt", "boxes_per_image", "gt_per_image", "duplicates_per_image")
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
    if rule.decode == "greedy":
        tokens = ev.decode(model, task, images, spec=spec, chunk=chunk)  # [B,L]
    else:
        key = jax.random.key(0) if key is None else key
        tokens = ev.sample(model, task, images, 1, key, spec=spec, chunk=chunk)[:, 0]
    _, lsm = ev.teacher_forced(model, task, images, tokens, chunk=chunk)  # task's grammar
    preds = {s: [task.detokenize(t, lp, score_rule=s) for t, lp in zip(tokens, lsm, strict=True)]
             for s in scores}
    return preds, tokens


def predict(model, task: det.DetectionTask, images: np.ndarray, rule: Rule,
            key: jax.Array | None = None, chunk: int = 256
            ) -> tuple[list[dict[str, np.ndarray]], np.ndarray]:
    """(predictions, tokens int32 [B,L]) of ``images`` [B,H,W,3] under ``rule``
    (:func:`predict_scored` with the rule's own score)."""
    preds, tokens = predict_scored(model, task, images, rule, (rule.score,), key, chunk)
    return preds[rule.score], tokens



def tuned_rule(cfg: det.DetectionConfig) -> Rule:
    """The rule the tuned model is read with: greedy, boxes scored by ``cfg.tuned_score``."""
    return {r.score: r for r in (TUNED_RULE, TUNED_CONF_RULE, TUNED_CLASS_RULE)}[cfg.tuned_score]


# ---------------------------------------------------------------------------------------------
# Metrics


def greedy_match(prediction: Mapping[str, np.ndarray], boxes: np.ndarray, labels: np.ndarray,
                 iou_thr: float = 0.5) -> tuple[int, int]:
    """(found, duplicates) of ``prediction`` against the ground truth ``boxes`` [M,4] (classes
    ``labels`` [M]): predictions in decreasing score each take the unmatched same-class ground
    truth with the highest IoU ≥ ``iou_thr`` (ties: the first; COCOeval's greedy rule at one
    threshold). ``found`` counts the ground truth taken; ``duplicates`` the predictions that take
    none but overlap an already-found object of their class at IoU ≥ ``iou_thr``: a second box
    on an object, the failure a reward without a duplicate penalty invites."""
    gt_boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    gt_labels = np.asarray(labels).reshape(-1)
    pb = np.asarray(prediction["boxes"], np.float64).reshape(-1, 4)
    if not len(gt_labels) or not len(pb):
        return 0, 0
    iou = reward_lib.pairwise_iou(pb, gt_boxes)  # [P,M]
    iou = np.where(np.asarray(prediction["labels"])[:, None] == gt_labels[None, :], iou, -1.0)
    taken = np.zeros(len(gt_labels), bool)
    duplicates = 0
    for p in np.argsort(-np.asarray(prediction["scores"]), kind="stable"):
        cand = np.where(taken, -1.0, iou[p])
        g = int(np.argmax(cand))
        if cand[g] >= iou_thr:
            taken[g] = True
        elif np.any(taken & (iou[p] >= iou_thr)):
            duplicates += 1
    return int(taken.sum()), duplicates


def match_counts(prediction: Mapping[str, np.ndarray], boxes: np.ndarray, labels: np.ndarray,
                 iou_thr: float = 0.5) -> int:
    """Ground-truth boxes ``boxes`` [M,4] (classes ``labels`` [M]) that ``prediction`` finds
    (:func:`greedy_match`)."""
    return greedy_match(prediction, boxes, labels, iou_thr)[0]


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
    matches = [greedy_match(p, ex["boxes"], ex["labels"])
               for p, ex in zip(predictions, examples, strict=True)]
    found, duplicates = (sum(c) for c in zip(*matches, strict=True)) if matches else (0, 0)
    n_gt = sum(len(np.asarray(ex["labels"]).reshape(-1)) for ex in examples)
    m["recall50_gt"] = found / n_gt if n_gt else float("nan")
    m["duplicates_per_image"] = duplicates / len(examples) if examples else float("nan")
    return {k: m[k] for k in METRICS}


def evaluate(model, task: det.DetectionTask, split: ev.Split, rule: Rule,
             key: jax.Array | None = None
             ) -> tuple[dict[str, float], list[dict[str, np.ndarray]]]:
    """(:data:`METRICS`, predictions) of ``model`` under ``rule`` on ``split``:
    :func:`evaluate_scored` with the rule's own score."""
    metrics, preds = evaluate_scored(model, task, split, rule, (rule.score,), key)
    return metrics[rule.score], preds[rule.score]


def evaluate_scored(model, task: det.DetectionTask, split: ev.Split, rule: Rule,
                    scores: Sequence[str] = det.SCORE_RULES, key: jax.Array | None = None
                    ) -> tuple[dict[str, dict[str, float]],
                               dict[str, list[dict[str, np.ndarray]]]]:
    """({score rule: :data:`METRICS`}, {score rule: predictions}): one decode of ``split``'s
    images under ``rule``, its boxes ranked by each rule in ``scores``
    (:func:`predict_scored`)."""
    preds, _ = predict_scored(model, task, split.batch["image"], rule, scores, key)
    return {s: metrics_of(task, p, split.examples) for s, p in preds.items()}, preds


def result_row(name: str, metrics: Mapping[str, float], **extra: Any) -> dict[str, Any]:
    """One row of the results table: percentages for the COCO metrics (0–100 as the paper)."""
    pct = ("mAP", "AP50", "AP75", "AR@100", "recall50", "recall50_gt")
    row = {"row": name} | {k: 100 * metrics[k] for k in pct}
    row |= {"predictions/image": metrics["boxes_per_image"],
            "truth/image": metrics["gt_per_image"],
            "duplicates/image": metrics["duplicates_per_image"]}
    return row | dict(extra)

