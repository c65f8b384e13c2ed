"""Object detection as a token sequence (pix2seq), tuned with the paper's detection reward.

**Sequence** (docs/design.md §7.2): ``num_slots`` slots of six tokens ``[ymin, xmin, ymax, xmax,
class, conf]``, ``L = 6 · num_slots``, no EOS. The MLE target lists the ground-truth boxes first (in
a random order when ``tokenize`` gets an ``rng``, as pix2seq) and fills the remaining slots with
PAD. An absent box is six PAD tokens, and the decision is made at the slot's first token, which
allows the coordinates ∪ {PAD}; so REINFORCE reaches the choice to emit a box.

**Vocabulary** (the released layout; ``V = 3 + (max_level + 1) + C``)::

    0                       PAD (absent box)
    1, 2                    confidence: 1 = "low", 2 = "high" IoU (the confidence loss
                            targets (p1, p2) = (1 − IoU, IoU))
    3 .. 3 + max_level      coordinate level q ∈ 0..max_level  ↔  q / max_level
    3 + max_level + 1 ..    classes 0..C−1 (category_id = class + 1)

With ``max_level`` = the image side (cpu preset) the levels are exactly the pixel edges of the
scenes boxes, so tokenization is lossless.

**Grammar** (:meth:`DetectionTask.allowed`, a pure jnp function of ``(position, prev_token)``;
kind = position % 6): kind 0 allows coordinates ∪ {PAD}; kinds 1–3 coordinates; kind 4 classes;
kind 5 confidences {1, 2}; after a PAD the rest of the slot is PAD; with ``trailing_absent``
(default) an absent slot also makes every later slot absent (the previous slot's last token is
PAD exactly when it was absent), so emission stops like pix2seq's EOS.

**MLE confidence target**: a ground-truth box carries confidence token 2 ("high"): it overlaps
its own ground truth with IoU 1, and the confidence loss's target for IoU 1 is (0, 0, 1).

**Decoding** (:meth:`DetectionTask.decode`, never raises): a slot is a box iff its six tokens
have the right kinds (four coordinate levels, a class, a confidence 1 or 2) *and* the box has
positive height and width (ymin < ymax and xmin < xmax). Every other slot (PAD, malformed,
inverted or empty) is **dropped**, never repaired, and tokens past the last full slot are
ignored. Dropping (rather than swapping the corners of) an inverted box agrees with the released
reward, whose IoU is 0 for such boxes, so the reward and the metric see the same boxes.

**Scores** for mAP (:meth:`DetectionTask.box_scores`, from a teacher-forced pass's masked
log-softmax): ``"confidence"``: p(2) / (p(1) + p(2)) at the confidence position (the tuned
model's learned IoU estimate); ``"class"``: the probability of the emitted class token (pix2seq's
rule, for an MLE model whose confidence tokens are untrained); ``"class_x_confidence"``: their
product, an estimate of "right class and well placed" (the IoU-aware class score of later
detectors). Without log-probs a box scores its confidence token: 1.0 for "high", 0.5 for "low".

**Reward** (:mod:`rlcv_lib.tasks.detection.reward`): class-weighted matches over IoU 0.5:0.95 minus
``nms_w`` × duplicates. Default: the correct version (equal threshold weights; the REINFORCE term
skips the confidence positions via :meth:`policy_mask`, which keeps each slot's first token, the
presence decision). ``paper_compat=True``: the released behaviour (skewed threshold weights 1,
2, 2, 3, 2; REINFORCE at the confidence positions too). The confidence loss (:meth:`aux_loss`,
weight ``conf_weight``) is a cross-entropy over {0, 1, 2} at every confidence position of all N
samples against (0, 1 − IoU, IoU) for emitted boxes and (1, 0, 0) for absent ones (under the
grammar an absent slot's confidence is forced PAD, so those terms are 0). The released training
step's other habits (gradient on one of the N samples) are the RL config's (``one_sample``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple, get_args

import jax
import jax.numpy as jnp
import numpy as np

from rlcv_lib import models
from rlcv_lib.config import ConfigError, tuning_field
from rlcv_lib.core import train as train_lib
from rlcv_lib.core.train import TrainConfig
from rlcv_lib.tasks.detection import reward as reward_lib

PAD, CONF_LOW, CONF_HIGH = 0, 1, 2
COORD_OFFSET = 3
TOKENS_PER_BOX = 6
CONF_KIND = 5

ScoreRule = Literal["confidence", "class", "class_x_confidence"]
SCORE_RULES: tuple[str, ...] = get_args(ScoreRule)
"""The per-box score rules of :meth:`DetectionTask.box_scores` (module docstring)."""


@dataclasses.dataclass(frozen=True)
class DetectionConfig:
    """Detection task: tokens, grammar, reward and confidence loss."""

    max_level: int = 64
    """Coordinates take the levels 0..max_level (value q/max_level); the image side = pixel grid."""
    num_slots: int = 18
    """Box slots per sequence (about 1.5–2× the largest object count); L = 6 · num_slots."""
    trailing_absent: bool = True
    """An absent slot makes every later slot absent (emission stops, like pix2seq's EOS)."""
    box_order: Literal["random", "raster"] = "random"
    """Order of the ground-truth boxes in MLE targets: ``random`` per example (pix2seq; needs the
    ``rng`` of ``tokenize``, else as annotated) or ``raster`` (by ymin, then xmin: one fixed
    target per image, which a small model learns to localize much sooner)."""
    nms_w: float = 0.3
    """Weight of the duplicate penalty in the reward."""
    cls_smooth: float = 0.05
    """Class weights w_c ∝ 1/(n_c + cls_smooth · Σn) from training-set class counts n."""
    thresholds: tuple[float, ...] = reward_lib.THRESHOLDS
    """IoU thresholds of the reward (COCO's 0.50:0.05:0.95)."""
    correct_thr: float = 0.5
    """IoU threshold at which a box's IoU becomes its confidence target."""
    conf_weight: float = 0.3
    """Weight of the confidence loss (the auxiliary loss; the RL step may scale it again)."""
    conf_target: Literal["iou", "matched"] = "iou"
    """Confidence target of duplicates: their IoU (released) or 0 ("matched")."""
    paper_compat: bool = False
    """Released behaviour: skewed threshold weights (1,2,2,3,2) and REINFORCE at conf tokens."""
    # Tuning and evaluation (docs/design.md §8); not part of what MLE produces, so not in a
    # shipped checkpoint's config hash. Why these values: notes/detection_tuning.md.
    val_size: int = tuning_field(1024)
    """Validation scenes of the tuning monitor: its validation reward and mAP at every
    evaluation, hence the checkpoint choice."""
    select_on: str = tuning_field("mAP")
    """The monitor's metric that chooses the tuned checkpoint (validation, ``tuned_score``)."""
    tuned_score: ScoreRule = tuning_field("class_x_confidence")
    """How the tuned model's greedy boxes are scored, for the checkpoint choice and its test
    row: class likelihood × learned confidence, the confidence alone (the paper's rule) or
    the class likelihood alone."""
    conf_reset_margin: float = tuning_field(1.0)
    """Before tuning the confidence readout is reset to p(high) = sigmoid(margin) for every
    box (``tune.reset_confidence``): the MLE model is certain of "high", whose first
    confidence-loss gradients would wreck the boxes."""
    conf_lr_mult: float = tuning_field(10.0)
    """The re-initialised confidence readout learns at this multiple of ``tune.lr`` (Adafactor
    moves each weight by about lr per update, too slowly for a readout learnt from zero)."""
    shown: int = tuning_field(6)
    """Test images drawn before and after tuning."""

    def __post_init__(self):
        def bad(msg: str) -> None:
            raise ConfigError(f"invalid DetectionConfig: {msg}")

        if self.max_level < 1:
            bad(f"max_level must be >= 1, got {self.max_level}")
        if self.num_slots < 1:
            bad(f"num_slots must be >= 1, got {self.num_slots}")
        if not self.thresholds or not all(0 < t < 1 for t in self.thresholds):
            bad(f"thresholds must be non-empty and in (0, 1), got {self.thresholds}")
        if self.correct_thr not in self.thresholds:
            bad(f"correct_thr={self.correct_thr} is not one of thresholds {self.thresholds}")
        if self.box_order not in ("random", "raster"):
            bad(f"box_order must be 'random' or 'raster', got {self.box_order!r}")
        if self.conf_target not in ("iou", "matched"):
            bad(f"conf_target must be 'iou' or 'matched', got {self.conf_target!r}")
        for name in ("nms_w", "cls_smooth", "conf_weight"):
            if getattr(self, name) < 0:
                bad(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.tuned_score not in SCORE_RULES:
            bad(f"tuned_score must be one of {SCORE_RULES}, got {self.tuned_score!r}")
        for name in ("val_size", "shown"):
            if getattr(self, name) < 1:
                bad(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.conf_lr_mult <= 0:
            bad(f"conf_lr_mult must be > 0, got {self.conf_lr_mult}")


DETECTION_PRESETS: dict[str, DetectionConfig] = {
    # scenes smoke world: 32 px, up to 6 objects.
    "smoke": DetectionConfig(max_level=32, num_slots=10, val_size=16, shown=3),
    # scenes cpu world: 64 px, up to 4 objects; 2-px coordinate bins, 6 slots (36 tokens), boxes
    # in raster order (a fixed target per image is learnt sooner on a CPU than pix2seq's random).
    "cpu": DetectionConfig(max_level=32, num_slots=6, box_order="raster"),
    # scenes gpu world: 128 px, up to 20 objects (192 tokens).
    "gpu": DetectionConfig(max_level=128, num_slots=32),
    # the paper: 1000 coordinate bins, 100 boxes = 600 tokens.
    "paper": DetectionConfig(max_level=1000, num_slots=100),
}


TUNE_PRESETS: dict[str, TrainConfig] = {
    **train_lib.TUNE_PRESETS,
    "cpu": dataclasses.replace(train_lib.TUNE_PRESETS["cpu"], batch_size=16, num_steps=1500,
                               eval_every=250, ckpt_every=250),
}
"""Detection's ``tune`` section per preset (the shared presets elsewhere). cpu: 1,500 updates
of 16 images × ``rl.num_samples`` at lr 1e-4, evaluated every 250 (notes/detection_tuning.md
says how these were chosen)."""


TRAIN_PRESETS: dict[str, TrainConfig] = {
    **train_lib.TRAIN_PRESETS,
    "cpu": dataclasses.replace(train_lib.TRAIN_PRESETS["cpu"], num_steps=3000, eval_every=500),
}
"""Detection's MLE ``train`` section per preset. cpu: 3,000 updates from the shared scenes
encoder, the shipped detector's run (notes/scenes_encoder.md)."""

MODEL_PRESETS = {**models.MODEL_PRESETS,
                 "cpu": dataclasses.replace(models.MODEL_SIZES["cpu"], encoder_init="shipped")}
"""Detection's ``model`` section per preset: at ``cpu`` the shared size, its encoder starting
from the shipped scenes encoder (docs/design.md §4.3); the shared sizes elsewhere."""


class Slots(NamedTuple):
    boxes: np.ndarray  # float64 [..., S, 4] normalised (ymin, xmin, ymax, xmax)
    labels: np.ndarray  # int64 [..., S] 0-based class (0 where not present)
    present: np.ndarray  # bool [..., S] the slot decodes to a box (see the module docstring)
    conf: np.ndarray  # int64 [..., S] confidence token (0 where not present)


def class_counts(labels: Sequence[np.ndarray], num_classes: int) -> np.ndarray:
    """int64 [C]: instances per class over per-example label arrays."""
    flat = np.concatenate([np.asarray(x, np.int64).reshape(-1) for x in labels] or [[]])
    flat = flat.astype(np.int64)
    bad = flat[(flat < 0) | (flat >= num_classes)]
    if bad.size:
        raise ValueError(f"labels {np.unique(bad).tolist()} outside [0, {num_classes})")
    return np.bincount(flat, minlength=num_classes)


def _reward_and_aux(res: reward_lib.DetectionReward, slots: Slots, gt_labels: Any, xp: Any
                    ) -> tuple[Any, dict[str, Any]]:
    """Rewards float32 [B,N] and the auxiliaries of :meth:`DetectionTask.reward` (``xp``:
    NumPy on the host or ``jax.numpy`` in the step)."""
    n_gt = xp.maximum((gt_labels >= 0).sum() * res.reward.shape[1], 1)
    aux = {"match_iou": res.match_iou.astype(xp.float32),
           "boxes_per_sample": xp.float32(slots.present.sum(-1).mean()),
           "recall50": xp.float32(res.num_matches[..., 0].sum() / n_gt),
           "duplicates50": xp.float32(res.num_duplicates[..., 0].mean())}
    return res.reward.astype(xp.float32), aux


def check_config(cfg: Any) -> None:
    """Refuses a detection config whose fields contradict each other (ConfigError naming both):
    the model's and the world's image sizes, and fewer slots than a scene holds things (the
    MLE target would drop boxes the reward and the judge still count)."""
    from rlcv_lib import config as config_lib

    config_lib.require_same_image_size(cfg)
    config_lib.require(cfg, cfg.detection.num_slots >= cfg.world.max_objects,
                       "detection.num_slots", "world.max_objects",
                       "every thing of a scene needs a slot of the MLE target")


def scenes_class_counts(world_cfg: Any, split: str = "train", num_examples: int | None = 4096
                        ) -> np.ndarray:
    """Class counts [C] of a scenes split (its first ``num_examples`` scenes; None: all). The
    scenes are i.i.d., so 4096 of them estimate the frequencies within a few percent."""
    from rlcv_lib.data import scenes

    n = scenes.split_size(world_cfg, split)
    n = n if num_examples is None else min(n, num_examples)
    labels = [scenes.example(world_cfg, split, i)["labels"] for i in range(n)]
    return class_counts(labels, len(world_cfg.thing_classes))


class DetectionTask:
    """pix2seq detection with the paper's reward (see the module docstring)."""

    name = "detection"
    pad_id = PAD
    eos_id = None
    frozen = None

    def __init__(self, cfg: DetectionConfig, class_names: Sequence[str],
                 class_counts: Sequence[float] | None = None):
        if not class_names:
            raise ValueError("class_names is empty")
        self.cfg = cfg
        self.class_names = tuple(class_names)
        self.num_classes = c = len(self.class_names)
        self.class_offset = COORD_OFFSET + cfg.max_level + 1
        self.vocab_size = self.class_offset + c
        self.max_len = TOKENS_PER_BOX * cfg.num_slots
        counts = np.zeros(c) if class_counts is None else np.asarray(class_counts, np.float64)
        if counts.shape != (c,):
            raise ValueError(f"class_counts has shape {counts.shape}, expected ({c},)")
        self.class_weights = reward_lib.class_weights(counts, cfg.cls_smooth)

        kinds = np.zeros((TOKENS_PER_BOX, self.vocab_size), bool)  # [6,V]
        coords = slice(COORD_OFFSET, self.class_offset)
        kinds[0:4, coords] = True
        kinds[0, PAD] = True
        kinds[4, self.class_offset:] = True
        kinds[CONF_KIND, [CONF_LOW, CONF_HIGH]] = True
        self._kind_table = kinds
        self._pad_only = np.arange(self.vocab_size) == PAD

    @classmethod
    def for_world(cls, cfg: DetectionConfig, world_cfg: Any,
                  class_counts: Sequence[float] | None = None) -> DetectionTask:
        """The task for a scenes world (its thing classes)."""
        return cls(cfg, world_cfg.thing_classes, class_counts)

    # --- tokens -----------------------------------------------------------------------------
    def quantize(self, boxes: np.ndarray) -> np.ndarray:
        """Levels int64 [K,4] of normalised boxes [K,4] (rounded, clipped; a box that would
        collapse keeps one level of height/width)."""
        ml = self.cfg.max_level
        q = np.clip(np.rint(np.asarray(boxes, np.float64).reshape(-1, 4) * ml), 0, ml)
        q = q.astype(np.int64)
        for lo, hi in ((0, 2), (1, 3)):
            q[:, lo] = np.minimum(q[:, lo], ml - 1)
            q[:, hi] = np.maximum(q[:, hi], q[:, lo] + 1)
        return q

    def tokenize(self, example: Mapping[str, Any], rng: np.random.Generator | None = None
                 ) -> np.ndarray:
        """The MLE target int32 [L] of an example's ``boxes`` [K,4] and ``labels`` [K]: boxes
        in ``cfg.box_order`` (random: a permutation drawn from ``rng`` if given, else as
        annotated; raster: by ymin, xmin, ymax, xmax), the first ``num_slots`` kept, confidence
        2, then PAD slots."""
        boxes = np.asarray(example["boxes"], np.float64).reshape(-1, 4)
        labels = np.asarray(example["labels"], np.int64).reshape(-1)
        if len(boxes) != len(labels):
            raise ValueError(f"{len(boxes)} boxes but {len(labels)} labels")
        bad = labels[(labels < 0) | (labels >= self.num_classes)]
        if bad.size:
            raise ValueError(f"labels {bad.tolist()} outside [0, {self.num_classes})")
        q = self.quantize(boxes)
        if self.cfg.box_order == "raster":
            order = np.lexsort((q[:, 3], q[:, 2], q[:, 1], q[:, 0]))
        else:
            order = np.arange(len(labels)) if rng is None else rng.permutation(len(labels))
        order = order[:self.cfg.num_slots]
        out = np.full((self.cfg.num_slots, TOKENS_PER_BOX), PAD, np.int32)
        k = len(order)
        out[:k, 0:4] = q[order] + COORD_OFFSET
        out[:k, 4] = labels[order] + self.class_offset
        out[:k, 5] = CONF_HIGH
        return out.reshape(-1)

    def allowed(self, position: jax.Array, prev_token: jax.Array) -> jax.Array:
        """bool [..., V]: the grammar (module docstring). ``position`` and ``prev_token``
        (-1 at position 0) broadcast against each other."""
        kind = jnp.asarray(position) % TOKENS_PER_BOX
        after_pad = jnp.asarray(prev_token) == PAD
        forced = after_pad & ((kind != 0) | self.cfg.trailing_absent)
        base = jnp.asarray(self._kind_table)[kind]  # [..., V]
        return jnp.where(forced[..., None], jnp.asarray(self._pad_only), base)

    def decode(self, tokens: Any, xp: Any = np) -> Slots:
        """Slots of token sequences int [..., L] (any values, any L; never raises). ``xp``:
        the array module (NumPy: float64 boxes; ``jax.numpy``: traceable, float32 boxes)."""
        t = np.asarray(tokens).astype(np.int64, copy=False) if xp is np else tokens
        if t.ndim == 0:
            t = t.reshape(1)
        s = t.shape[-1] // TOKENS_PER_BOX
        t = t[..., :s * TOKENS_PER_BOX].reshape(t.shape[:-1] + (s, TOKENS_PER_BOX))
        ml = self.cfg.max_level
        q = t[..., 0:4] - COORD_OFFSET
        coord_ok = ((q >= 0) & (q <= ml)).all(-1)
        label = t[..., 4] - self.class_offset
        class_ok = (label >= 0) & (label < self.num_classes)
        conf_ok = (t[..., 5] == CONF_LOW) | (t[..., 5] == CONF_HIGH)
        boxes = xp.clip(q, 0, ml) / ml
        nonempty = (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
        present = coord_ok & class_ok & conf_ok & nonempty
        return Slots(boxes=xp.where(present[..., None], boxes, 0.0),
                     labels=xp.where(present, label, 0),
                     present=present,
                     conf=xp.where(present, t[..., 5], 0))

    def box_scores(self, log_softmax: np.ndarray, tokens: np.ndarray,
                   rule: ScoreRule = "confidence") -> np.ndarray:
        """Per-slot scores float [..., S] from the masked log-softmax [..., L, V] of a
        teacher-forced pass over ``tokens`` [..., L] (module docstring)."""
        if rule not in SCORE_RULES:
            raise ValueError(f"rule={rule!r}: choose one of {SCORE_RULES}")
        lsm = np.asarray(log_softmax, np.float64)
        s = self.cfg.num_slots
        factors = []
        if rule in ("confidence", "class_x_confidence"):
            p = np.exp(lsm[..., CONF_KIND::TOKENS_PER_BOX, :][..., :s, CONF_LOW:CONF_HIGH + 1])
            tot = p.sum(-1)
            factors.append(np.where(tot > 0, p[..., 1] / np.where(tot > 0, tot, 1.0), 0.0))
        if rule in ("class", "class_x_confidence"):
            tok = np.asarray(tokens, np.int64)[..., 4::TOKENS_PER_BOX][..., :s]
            lp = lsm[..., 4::TOKENS_PER_BOX, :][..., :s, :]
            tok = np.clip(tok, 0, lsm.shape[-1] - 1)
            factors.append(np.exp(np.take_along_axis(lp, tok[..., None], -1)[..., 0]))
        return np.prod(factors, axis=0)

    def detokenize(self, tokens: np.ndarray, log_softmax: np.ndarray | None = None,
                   score_rule: ScoreRule = "confidence") -> dict[str, np.ndarray]:
        """One prediction from int [L]: ``boxes`` float32 [K,4], ``labels`` int32 [K],
        ``scores`` float32 [K], ``slots`` int32 [K] (the slot each box came from). Scores come
        from ``log_softmax`` [L,V] with ``score_rule`` if given, else the confidence token."""
        slots = self.decode(np.asarray(tokens).reshape(-1))
        keep = np.flatnonzero(slots.present)
        if log_softmax is not None:
            scores = self.box_scores(log_softmax, tokens, score_rule)[keep]
        else:
            scores = np.where(slots.conf[keep] == CONF_HIGH, 1.0, 0.5)
        return {"boxes": slots.boxes[keep].astype(np.float32),
                "labels": slots.labels[keep].astype(np.int32),
                "scores": np.asarray(scores, np.float32),
                "slots": keep.astype(np.int32)}

    # --- reward -----------------------------------------------------------------------------
    def reward_details(self, samples: np.ndarray, batch: Mapping[str, Any]
                       ) -> tuple[reward_lib.DetectionReward, Slots]:
        """The full reward record of ``samples`` int [B,N,L] against ``batch["boxes"]``
        [B,M,4] and ``batch["labels"]`` [B,M] (-1 padded; or per-image lists, padded here),
        and the decoded slots.

        The ground truth is taken as given: every box counts, at full precision. (The released
        reward reads it from the ground-truth token sequence, i.e. quantised and cut to the
        slots; on the scenes' pixel grid with slots ≥ objects the two coincide.)"""
        samples = np.asarray(samples)
        if samples.ndim != 3:
            raise ValueError(f"samples must be [B,N,L], got shape {samples.shape}")
        for k in ("boxes", "labels"):
            if k not in batch:
                raise KeyError(f"the detection reward needs batch[{k!r}]; batch has "
                               f"{sorted(batch)}")
        slots = self.decode(samples)
        cfg = self.cfg
        gt_boxes, gt_labels = reward_lib.stack_ground_truth(batch["boxes"], batch["labels"])
        res = reward_lib.detection_reward(
            slots.boxes, slots.labels, slots.present, gt_boxes, gt_labels, self.class_weights,
            cfg.thresholds, cfg.nms_w, cfg.correct_thr, cfg.conf_target, cfg.paper_compat)
        return res, slots

    def reward(self, samples: np.ndarray, batch: Mapping[str, Any], frozen: Any = None
               ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Rewards float32 [B,N]; aux: ``match_iou`` float32 [B,N,S] (the confidence targets,
        for :meth:`aux_loss`) and scalar metrics ``boxes_per_sample``, ``recall50`` (matched
        fraction of the ground truth at IoU 0.5), ``duplicates50``."""
        for k in ("boxes", "labels"):
            if k not in batch:
                raise KeyError(f"the detection reward needs batch[{k!r}]; batch has "
                               f"{sorted(batch)}")
        gt_boxes, gt_labels = reward_lib.stack_ground_truth(batch["boxes"], batch["labels"])
        res, slots = self.reward_details(samples, {"boxes": gt_boxes, "labels": gt_labels})
        return _reward_and_aux(res, slots, gt_labels, np)

    device_reward_keys: tuple[str, ...] = ("boxes", "labels")
    """The batch entries :meth:`device_reward` reads (padded arrays on the device)."""

    def device_reward(self, samples: jax.Array, batch: Mapping[str, jax.Array],
                      frozen: Any = None) -> tuple[jax.Array, dict[str, jax.Array]]:
        """:meth:`reward` in ``jax.numpy``, traced into the RL step (``rl.device_reward``):
        the same decode, reward and auxiliaries on ``samples`` [B,N,L] and the padded
        ``batch["boxes"]`` [B,M,4] / ``batch["labels"]`` [B,M], in float32. :meth:`reward` is
        its test oracle."""
        slots = self.decode(samples, xp=jnp)
        cfg = self.cfg
        res = reward_lib.detection_reward_jax(
            slots.boxes, slots.labels, slots.present, jnp.asarray(batch["boxes"], jnp.float32),
            jnp.asarray(batch["labels"]), jnp.asarray(self.class_weights, jnp.float32),
            cfg.thresholds, cfg.nms_w, cfg.correct_thr, cfg.conf_target, cfg.paper_compat)
        return _reward_and_aux(res, slots, jnp.asarray(batch["labels"]), jnp)

    def policy_mask(self, samples: jax.Array) -> jax.Array:
        """bool [B,N,L]: positions that carry the REINFORCE term. Default: all but the
        confidence positions (each slot's first token, the presence decision, included);
        ``paper_compat``: all positions (the released behaviour)."""
        length = samples.shape[-1]
        keep = (jnp.arange(length) % TOKENS_PER_BOX != CONF_KIND) | self.cfg.paper_compat
        return jnp.broadcast_to(keep, samples.shape)

    def aux_loss(self, log_softmax: jax.Array, samples: jax.Array,
                 aux: Mapping[str, jax.Array]) -> jax.Array:
        """``conf_weight`` × the confidence cross-entropy, mean over [B,N,S]: at each confidence
        position, tokens {0,1,2} against (1,0,0) for an absent slot and (0, 1−IoU, IoU) for an
        emitted one, IoU = ``aux["match_iou"]``."""
        iou = jnp.asarray(aux["match_iou"], jnp.float32)  # [B,N,S]
        conf = samples[..., CONF_KIND::TOKENS_PER_BOX]  # [B,N,S]
        emitted = (conf != PAD).astype(jnp.float32)
        target = jnp.stack([1.0 - emitted, emitted * (1.0 - iou), emitted * iou], -1)
        logp = log_softmax[..., CONF_KIND::TOKENS_PER_BOX, :3]  # [B,N,S,3]
        logp = jnp.where(target > 0, logp, 0.0)  # masked (-inf) entries have target 0
        ce = -jnp.sum(target * logp, -1)
        return self.cfg.conf_weight * jnp.mean(ce)

    # --- metric and drawing -----------------------------------------------------------------
    def evaluate(self, predictions: Sequence[Mapping[str, np.ndarray]],
                 examples: Sequence[Mapping[str, Any]],
                 area_ranges: Sequence[Sequence[float]] | None = None) -> dict[str, float]:
        """COCO metrics through pycocotools' COCOeval (bbox), fractions in [0,1] (-1 where a
        bucket has no ground truth): mAP, AP50, AP75, AP_small/medium/large, AR@1/10/100, and
        recall50 (per-class mean recall at IoU 0.5, 100 detections), boxes_per_image,
        gt_per_image. ``area_ranges`` default to the scenes' scaled COCO buckets
        (``scenes.coco_area_ranges`` of the first image's size)."""
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        from rlcv_lib.data import coco_export, scenes

        if len(predictions) != len(examples):
            raise ValueError(f"{len(predictions)} predictions for {len(examples)} examples")
        if not examples:
            raise ValueError("evaluate needs at least one example")
        check_predictions(predictions, examples)
        cats = [{"id": i + 1, "name": n, "supercategory": "thing", "isthing": 1}
                for i, n in enumerate(self.class_names)]
        sizes = [tuple(int(v) for v in ex["image"].shape[:2]) for ex in examples]
        gt = _ground_truth_json(examples, cats, sizes)
        dets = coco_export.detections_json(
            [ex["image_id"] for ex in examples], [p["boxes"] for p in predictions],
            [p["labels"] for p in predictions], [p["scores"] for p in predictions], sizes)
        for i, d in enumerate(dets):
            d.update(id=i + 1, area=d["bbox"][2] * d["bbox"][3], iscrowd=0)
        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt, coco_dt = COCO(), COCO()
            coco_gt.dataset = gt
            coco_gt.createIndex()
            coco_dt.dataset = {"images": gt["images"], "categories": gt["categories"],
                               "annotations": dets}
            coco_dt.createIndex()
            ev = COCOeval(coco_gt, coco_dt, "bbox")
            if area_ranges is None:
                area_ranges = scenes.coco_area_ranges(*sizes[0])
            ev.params.areaRng = [[float(v) for v in r] for r in area_ranges]
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        names = ("mAP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR@1", "AR@10",
                 "AR@100", "AR_small", "AR_medium", "AR_large")
        out = {k: float(v) for k, v in zip(names, ev.stats, strict=True)}
        rec = ev.eval["recall"][0, :, 0, -1]  # [K] at IoU 0.5, all areas, 100 detections
        out["recall50"] = float(rec[rec > -1].mean()) if (rec > -1).any() else -1.0
        out["boxes_per_image"] = len(dets) / len(examples)
        out["gt_per_image"] = len(gt["annotations"]) / len(examples)
        return out

    def draw(self, example: Mapping[str, Any], prediction: Mapping[str, np.ndarray] | None = None,
             ax=None, min_score: float = 0.0, fontsize: float = 7.0):
        """The image, ground-truth boxes (dashed white) and predicted boxes coloured by class,
        each labelled with its class's initial and score. Boxes scoring below ``min_score``
        are not drawn; the title counts what the metrics count (every predicted box) and, when
        some are hidden, how many are drawn."""
        import matplotlib.pyplot as plt
        from matplotlib.patches import Rectangle

        ax = ax or plt.gca()
        img = np.asarray(example["image"])
        h, w = img.shape[:2]
        ax.imshow(img, interpolation="nearest")

        def rect(box, **kw):
            y0, x0, y1, x1 = np.asarray(box) * [h, w, h, w]
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, **kw))
            return x0, y0

        for box in np.asarray(example.get("boxes", np.zeros((0, 4)))).reshape(-1, 4):
            rect(box, ec="white", lw=0.8, ls="--")
        n_pred = n_drawn = 0
        if prediction is not None:
            cmap = plt.get_cmap("tab10")
            for box, lab, sc in zip(prediction["boxes"], prediction["labels"],
                                    prediction["scores"], strict=True):
                n_pred += 1
                if sc < min_score:
                    continue
                n_drawn += 1
                x0, y0 = rect(box, ec=cmap(int(lab) % 10), lw=1.2)
                ax.text(x0 - 0.5, y0 - 0.8, f"{self.class_names[int(lab)][:2]} {sc:.2f}",
                        fontsize=fontsize, color="white", va="bottom",
                        bbox={"fc": cmap(int(lab) % 10), "alpha": 0.7, "pad": 0.4, "lw": 0})
        n_gt = len(np.asarray(example.get("labels", [])))
        shown = f" ({n_drawn} drawn)" if n_drawn < n_pred else ""
        ax.set_title(f"{n_pred} predicted{shown} / {n_gt} true", fontsize=fontsize + 1)
        ax.set_xticks([])
        ax.set_yticks([])
        return ax


def check_predictions(predictions: Sequence[Mapping[str, np.ndarray]],
                      examples: Sequence[Mapping[str, Any]]) -> None:
    """Raises ValueError naming the image of the first prediction whose boxes, labels and
    scores do not fit together or hold a non-finite value. (pycocotools does not check: a NaN
    box compares as a match, so one NaN-height box on a ground truth scores mAP 1.)"""
    for p, ex in zip(predictions, examples, strict=True):
        where = f"prediction for image {ex.get('image_id', '?')}"
        missing = [k for k in ("boxes", "labels", "scores") if k not in p]
        if missing:
            raise ValueError(f"{where} lacks {missing}")
        boxes = np.asarray(p["boxes"], np.float64)
        k = len(np.asarray(p["labels"]).reshape(-1))
        if boxes.shape != (k, 4) or np.shape(p["scores"]) != (k,):
            raise ValueError(f"{where}: boxes {boxes.shape}, labels ({k},) and scores "
                             f"{np.shape(p['scores'])} must be [K,4], [K], [K]")
        for name, v in (("boxes", boxes), ("scores", np.asarray(p["scores"], np.float64))):
            bad = ~np.isfinite(v)
            if bad.any():
                raise ValueError(f"{where}: {name} hold non-finite values at box(es) "
                                 f"{np.unique(np.nonzero(bad)[0]).tolist()}")


def _ground_truth_json(examples: Sequence[Mapping[str, Any]], cats: list[dict],
                       sizes: list[tuple[int, int]]) -> dict[str, Any]:
    """COCO instances dict of ``examples``: scenes examples through the COCO export (areas =
    visible pixels, as COCO's segment areas); others from their boxes (area = box area)."""
    from rlcv_lib.data import coco_export

    if all("segments" in ex and "panoptic" in ex for ex in examples):
        return coco_export.instances_json(examples, cats, with_masks=False)
    images, anns = [], []
    for ex, (h, w) in zip(examples, sizes, strict=True):
        images.append({"id": int(ex["image_id"]), "height": h, "width": w})
        for box, lab in zip(coco_export.pixel_boxes(ex["boxes"], h, w),
                            np.asarray(ex["labels"]).reshape(-1), strict=True):
            anns.append({"id": len(anns) + 1, "image_id": int(ex["image_id"]),
                         "category_id": int(lab) + 1, "bbox": [float(v) for v in box],
                         "area": float(box[2] * box[3]), "iscrowd": 0})
    return {"images": images, "annotations": anns,
            "categories": [{k: c[k] for k in ("id", "name", "supercategory")} for c in cats]}
