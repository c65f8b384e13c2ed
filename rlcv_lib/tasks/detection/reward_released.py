"""A literal NumPy replay of the released big_vision detection reward (reference only).

Written from the description of ``configs/proj/reward_tune/detection_reward.py``
(docs/design.md §5.1) to be the yardstick of :mod:`rlcv_lib.tasks.detection.reward` in tests
and benchmarks. It follows the released steps one by one, on one (prediction sequence,
ground-truth sequence) pair at a time, with the released token layout, clipping and IoU, and
the released dictionary of per-threshold results keyed ``f"{k}-{thr:0.1f}"`` (quirk 1: ten
thresholds collapse onto five keys, so the final mean weights IoU 0.5, 0.6, 0.7, 0.85, 0.95 by
1, 2, 2, 3, 2 tenths). Deliberately slow and plain: Python loops over images, samples and
thresholds (where the released code maps them). Never used for training.

Token layout (shared with :mod:`rlcv_lib.tasks.detection.task`): 0 PAD, ``1..max_conf`` confidence,
then ``max_level + 1`` coordinate levels, then ``num_cls`` classes; 6 tokens per box
``[ymin, xmin, ymax, xmax, class, conf]``; a box is present when its confidence token is > 0.
"""

from __future__ import annotations

import dataclasses

import numpy as np

DIM_PER_BOX = 6


@dataclasses.dataclass(frozen=True)
class ReleasedConfig:
    """The released reward's settings (the paper's values as defaults, COCO's 80 classes)."""

    max_level: int = 1000
    """Coordinates take the levels 0..max_level (normalised by max_level)."""
    max_conf: int = 2
    """Confidence tokens 1..max_conf."""
    num_cls: int = 80
    """Number of classes."""
    nms_w: float = 0.3
    """Weight of the duplicate penalty."""
    cls_smooth: float = 0.05
    """Class-frequency smoothing of the class weights."""
    reward_thr: tuple[float, ...] = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
    """IoU thresholds."""
    correct_thr: float = 0.5
    """Threshold whose per-box IoU becomes the confidence target."""
    cls_counts: tuple[float, ...] | None = None
    """Training-set instances per class (None: all equal)."""


def seq2box(seq, max_level: int, max_conf: int, num_cls: int, xp=np):
    """Boxes [S,4] in [0,1], labels [S], confidences [S] of one token sequence [L]
    (a trailing partial box is cut off; every field is clipped into its range). ``xp``: NumPy
    (the replay) or ``jax.numpy`` (the jitted port)."""
    seq = np.asarray(seq, np.int64) if xp is np else seq
    seq = seq[:seq.shape[0] - seq.shape[0] % DIM_PER_BOX].reshape(-1, DIM_PER_BOX)
    boxes = xp.clip(seq[:, 0:4] - max_conf - 1, 0, max_level) / max_level
    labels = xp.clip(seq[:, 4] - max_conf - 1 - max_level - 1, 0, num_cls - 1)
    confs = xp.clip(seq[:, 5], 0, max_conf)
    return boxes, labels, confs


def iou_fn(box1: np.ndarray, box2: np.ndarray) -> float:
    """IoU of two boxes (ymin, xmin, ymax, xmax): absolute areas, +1e-9 in the denominator."""
    ymin1, xmin1, ymax1, xmax1 = box1
    ymin2, xmin2, ymax2, xmax2 = box2
    a1 = abs((ymax1 - ymin1) * (xmax1 - xmin1))
    a2 = abs((ymax2 - ymin2) * (xmax2 - xmin2))
    yi = max(0.0, min(ymax1, ymax2) - max(ymin1, ymin2))
    xi = max(0.0, min(xmax1, xmax2) - max(xmin1, xmin2))
    inter = xi * yi
    return inter / (a1 + a2 - inter + 1e-9)


def class_weights(cfg: ReleasedConfig) -> np.ndarray:
    counts = np.ones(cfg.num_cls) if cfg.cls_counts is None else np.asarray(cfg.cls_counts,
                                                                           np.float64)
    w = 1.0 / (counts + cfg.cls_smooth * counts.sum())
    return cfg.num_cls * w / w.sum()


def reward_fn_thr(seq_pred: np.ndarray, seq_gt: np.ndarray, thr: float,
                  cfg: ReleasedConfig) -> dict[str, np.ndarray]:
    """The released per-threshold reward of one prediction sequence against one ground-truth
    sequence: ``reward``, ``num_matches``, ``nms_penalty``, ``correct`` [S], ``match_iou`` [S]."""
    weights = class_weights(cfg)
    boxes_p, labels_p, confs_p = seq2box(seq_pred, cfg.max_level, cfg.max_conf, cfg.num_cls)
    boxes_g, labels_g, confs_g = seq2box(seq_gt, cfg.max_level, cfg.max_conf, cfg.num_cls)
    n_p, n_g = len(boxes_p), len(boxes_g)

    # IoU matrix, predictions x ground truth
    iou = np.zeros((n_p, n_g))
    for i in range(n_p):
        for j in range(n_g):
            iou[i, j] = iou_fn(boxes_p[i], boxes_g[j])
    iou = np.where(iou > thr, iou, 0.0)  # threshold
    iou = iou * ((confs_p[:, None] > 0) & (confs_g[None, :] > 0))  # both boxes present
    iou = iou * (labels_p[:, None] == labels_g[None, :])  # same class

    # each prediction keeps only its best ground truth
    keep = np.zeros_like(iou)
    keep[np.arange(n_p), np.argmax(iou, axis=1)] = 1.0
    iou = iou * keep

    correct = np.any(iou > 0.0, axis=1).astype(np.int32) + 1
    correct = np.where(confs_p > 0, correct, 0)

    # each ground truth takes its best prediction
    match_idx = np.argmax(iou, axis=0)
    match_val = iou[match_idx, np.arange(n_g)]
    match_idx = np.where(match_val > 0.0, match_idx, -1)
    match_reward = np.sum((match_idx >= 0) * weights[labels_g])

    # duplicates: kept pairs whose ground truth took another prediction
    taken = np.zeros_like(iou)
    for j, i in enumerate(match_idx):
        if i >= 0:
            taken[i, j] = 1.0
    nms_penalty = np.sum((iou > 0.0) * (1.0 - taken) * weights[labels_p][:, None])

    return {"reward": match_reward - cfg.nms_w * nms_penalty,
            "num_matches": np.sum(match_idx >= 0),
            "nms_penalty": nms_penalty,
            "correct": correct,
            "match_iou": np.sum(iou, axis=1)}


def _batched(seqs_pred: np.ndarray, seqs_gt: np.ndarray, thr: float,
             cfg: ReleasedConfig) -> dict[str, np.ndarray]:
    """reward_fn_thr over images (axis 0) and samples (axis 1), stacked to [B,N,...]."""
    rows = [[reward_fn_thr(seqs_pred[b, n], seqs_gt[b], thr, cfg)
             for n in range(seqs_pred.shape[1])] for b in range(seqs_pred.shape[0])]
    return {k: np.array([[r[k] for r in row] for row in rows]) for k in rows[0][0]}


def reward_fn(seqs_pred: np.ndarray, seqs_gt: np.ndarray, cfg: ReleasedConfig):
    """Rewards [B,N] of prediction sequences [B,N,L] against ground-truth sequences [B,L], and
    ``{"result", "correct", "match_iou"}`` as released (``result`` holds the per-key values)."""
    seqs_pred, seqs_gt = np.asarray(seqs_pred), np.asarray(seqs_gt)
    result: dict[str, np.ndarray] = {}
    r_keys = ["reward", "num_matches", "nms_penalty"]
    correct = match_iou = None
    for thr in cfg.reward_thr:
        rewards = _batched(seqs_pred, seqs_gt, thr, cfg)
        result = {**result, **{f"{k}-{thr:0.1f}": rewards[k] for k in r_keys}}
        if thr == cfg.correct_thr:
            correct, match_iou = rewards["correct"], rewards["match_iou"]
    result = {**result,
              **{k: np.mean(np.array([result[f"{k}-{thr:0.1f}"] for thr in cfg.reward_thr]),
                            axis=0) for k in r_keys}}
    return result["reward"], {"result": result, "correct": correct, "match_iou": match_iou}


def synthetic_batch(rng: np.random.Generator, batch: int, samples: int, num_slots: int,
                    max_gt: int, max_level: int = 1000, num_cls: int = 80,
                    disjoint: bool = False) -> dict[str, np.ndarray]:
    """Random ground truth and sampled-looking predictions in the shared token layout, for
    comparing reward implementations (tests, benchmarks).

    Ground truth: 0..``max_gt`` boxes per image on the level grid (``disjoint``: one per cell of
    a grid, so no two overlap and matching at IoU ≥ 0.5 is unambiguous). Predictions: a random
    number of emitted slots (then PAD), each a jittered copy of a random ground-truth box (so
    duplicates occur) or a random box, the true class 80% of the time, a random confidence; 5%
    are inverted or empty (decoded as absent). Returns ``gt_boxes`` [B,M,4], ``gt_labels``
    [B,M] (-1 padded), ``gt_seqs`` [B,6S], ``pred_seqs`` [B,N,6S] (int64).
    """
    coord0, cls0 = 3, 3 + max_level + 1
    cells = int(np.ceil(np.sqrt(max(max_gt, 1))))
    gt_q = np.zeros((batch, max_gt, 4), np.int64)
    gt_labels = np.full((batch, max_gt), -1, np.int64)
    gt_seqs = np.zeros((batch, num_slots, DIM_PER_BOX), np.int64)
    for b in range(batch):
        k = int(rng.integers(0, max_gt + 1))
        if disjoint:
            cell = max_level // cells
            where = rng.permutation(cells * cells)[:k]
            lo = np.stack([where // cells, where % cells], -1) * cell  # [k,2]
            a = lo + rng.integers(0, cell // 3, (k, 2))
            size = rng.integers(cell // 4, cell - cell // 3, (k, 2))
            q = np.concatenate([a, a + size], -1)
        else:
            a = rng.integers(0, max_level - 2, (k, 2))
            size = rng.integers(1, max_level // 3, (k, 2))
            q = np.concatenate([a, np.minimum(a + size, max_level)], -1)
        gt_q[b, :k], gt_labels[b, :k] = q, rng.integers(0, num_cls, k)
        m = min(k, num_slots)
        gt_seqs[b, :m, :4] = q[:m] + coord0
        gt_seqs[b, :m, 4] = gt_labels[b, :m] + cls0
        gt_seqs[b, :m, 5] = 2
    pred = np.zeros((batch, samples, num_slots, DIM_PER_BOX), np.int64)
    for b in range(batch):
        k_gt = int((gt_labels[b] >= 0).sum())
        for n in range(samples):
            emitted = int(rng.integers(0, num_slots + 1))
            for s in range(emitted):
                if k_gt and rng.random() < 0.6:
                    g = int(rng.integers(0, k_gt))
                    scale = max(1, max_level // 100)
                    q = gt_q[b, g] + rng.integers(-3 * scale, 3 * scale + 1, 4)
                    lab = gt_labels[b, g] if rng.random() < 0.8 else rng.integers(0, num_cls)
                else:
                    a = rng.integers(0, max_level - 2, 2)
                    q = np.concatenate([a, a + rng.integers(1, max_level // 3, 2)])
                    lab = rng.integers(0, num_cls)
                q = np.clip(q, 0, max_level)
                if rng.random() < 0.05:  # inverted or empty: decoded as absent
                    q[[0, 2]] = q[[2, 0]] if q[0] != q[2] else q[[0, 0]]
                pred[b, n, s, :4] = q + coord0
                pred[b, n, s, 4] = lab + cls0
                pred[b, n, s, 5] = rng.integers(1, 3)
    return {"gt_boxes": gt_q / max_level, "gt_labels": gt_labels,
            "gt_seqs": gt_seqs.reshape(batch, -1),
            "pred_seqs": pred.reshape(batch, samples, -1)}


def make_jax_reward(cfg: ReleasedConfig, dtype: str = "float32"):
    """The released algorithm as the released code runs it: JAX, vectorised, jitted.

    The same steps as :func:`reward_fn_thr` on whole arrays (in ``dtype``: float32 as on an
    accelerator, where an IoU exactly at a threshold may round across it; float64, under
    ``jax.enable_x64``, equals the replay):
    the IoU matrix by broadcasting, the keep-best and take-best matchings as one-hot masks of
    argmaxes, mapped over samples and images, and the thresholds looped in Python at trace time
    into the same ``f"{k}-{thr:0.1f}"`` dictionary, whose mean reads the collapsed keys. This is
    the fair speed baseline for :mod:`rlcv_lib.tasks.detection.reward` (the NumPy replay above
    is the literal reference, deliberately slow). Returns ``fn(pred_seqs [B,N,L], gt_seqs
    [B,L']) -> (rewards [B,N], match_iou [B,N,S])``, jitted.
    """
    import jax
    import jax.numpy as jnp

    weights = jnp.asarray(class_weights(cfg), dtype)

    def boxes_of(seq):  # [L] -> boxes [S,4] in dtype, labels [S], confs [S]
        boxes, labels, confs = seq2box(seq, cfg.max_level, cfg.max_conf, cfg.num_cls, jnp)
        return boxes.astype(dtype), labels, confs

    def pair(seq_pred, seq_gt, thr):  # one sequence against its ground truth, one threshold
        bp, lp, cp = boxes_of(seq_pred)
        bg, lg, cg = boxes_of(seq_gt)
        a, b = bp[:, None, :], bg[None, :, :]
        area = lambda x: jnp.abs((x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1]))
        yi = jnp.maximum(0.0, jnp.minimum(a[..., 2], b[..., 2]) - jnp.maximum(a[..., 0], b[..., 0]))
        xi = jnp.maximum(0.0, jnp.minimum(a[..., 3], b[..., 3]) - jnp.maximum(a[..., 1], b[..., 1]))
        inter = yi * xi
        iou = inter / (area(a) + area(b) - inter + 1e-9)  # [S,M]
        iou = jnp.where(iou > thr, iou, 0.0)
        iou = iou * ((cp[:, None] > 0) & (cg[None, :] > 0)) * (lp[:, None] == lg[None, :])
        iou = iou * jax.nn.one_hot(jnp.argmax(iou, 1), iou.shape[1])  # keep the best gt
        match_idx = jnp.argmax(iou, 0)  # [M] each gt's best prediction
        matched = iou[match_idx, jnp.arange(iou.shape[1])] > 0.0
        taken = jax.nn.one_hot(match_idx, iou.shape[0]).T * matched[None, :]  # [S,M]
        nms_penalty = jnp.sum((iou > 0.0) * (1.0 - taken) * weights[lp][:, None])
        return {"reward": jnp.sum(matched * weights[lg]) - cfg.nms_w * nms_penalty,
                "num_matches": jnp.sum(matched), "nms_penalty": nms_penalty,
                "match_iou": jnp.sum(iou, 1)}

    over_samples = jax.vmap(pair, in_axes=(0, None, None))
    over_images = jax.vmap(over_samples, in_axes=(0, 0, None))

    @jax.jit
    def fn(pred_seqs, gt_seqs):
        result, match_iou = {}, None
        for thr in cfg.reward_thr:
            out = over_images(pred_seqs, gt_seqs, thr)
            result.update({f"{k}-{thr:0.1f}": out[k] for k in ("reward", "num_matches",
                                                               "nms_penalty")})
            if thr == cfg.correct_thr:
                match_iou = out["match_iou"]
        reward = jnp.mean(jnp.stack([result[f"reward-{thr:0.1f}"] for thr in cfg.reward_thr]),
                          0)
        return reward, match_iou

    return fn
