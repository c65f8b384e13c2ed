"""Per-image PQ speed: ours (one batched array program, NumPy float64 and jitted JAX float32)
against panopticapi on the same (prediction, ground truth) pairs.

Pairs: the ground truth of the first scenes of the cpu world's test split (things, stuff,
void), each with predictions made from it by moving segments by up to two pixels, splitting
some and dropping some (the RL batch: ``--images`` × ``--samples``); ``--upscale`` k also times
the same maps enlarged k× per side (512² at k = 8, the paper's resolution).

Baselines, each checked equal to the others on every pair before anything is timed:

* **panopticapi**: ``pq_compute_single_core`` on one image at a time, with the PNG and JSON
  files written beforehand; its time includes reading and decoding the two PNGs, which is how
  panopticapi computes PQ (it has no in-memory entry point), and ``pq_average``;
* **panopticapi's rules in memory**: the same per-image loop (``np.unique`` of the combined ids,
  dictionaries of segments) on arrays already in memory, written here for this comparison: the
  ratio against it is the speed of the array program, not of skipping file I/O.

Timings: best of ``--repeats``; JAX after its compiling call, blocked until ready.

    python benchmarks/bench_panoptic_reward.py [--images 16 --samples 8 --repeats 3] [--no-save]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np
from record import Suite, best_of

from rlcv_lib.tasks.panoptic import reward as pq

OFFSET = 256 * 256 * 256


def predictions_of(rng: np.random.Generator, gt: np.ndarray, categories: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(id map, categories [P]) of one sampled-looking prediction of ``gt``."""
    out = np.zeros_like(gt)
    cats = []
    for k, c in enumerate(categories, 1):
        if rng.uniform() < 0.1:
            continue
        mask = np.roll(gt == k, tuple(rng.integers(-2, 3, 2)), (0, 1))
        out[mask] = len(cats) + 1
        cats.append(c if rng.uniform() < 0.85 else rng.integers(1, categories.max() + 1))
        if rng.uniform() < 0.2:  # a split: the right half becomes a segment of its own
            cols = np.flatnonzero(mask.any(0))
            if len(cols) > 1:
                out[mask & (np.arange(gt.shape[1]) >= cols[len(cols) // 2])] = len(cats) + 1
                cats.append(cats[-1])
    present = np.unique(out[out > 0])
    renumber = np.zeros(len(cats) + 1, np.int64)
    renumber[present] = np.arange(1, len(present) + 1)
    return renumber[out], np.array(cats, np.int64)[present - 1].reshape(-1)


def make_pairs(images: int, samples: int, upscale: int, seed: int):
    """The pairs as padded arrays (:mod:`rlcv_lib.tasks.panoptic.reward`'s inputs) and as
    panopticapi's per-image annotations."""
    from rlcv_lib.data import scenes

    world = scenes.WORLD_PRESETS["cpu"]
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(images):
        ex = scenes.example(world, "test", i)
        segs = sorted(ex["segments"], key=lambda s: s["id"])
        assert [s["id"] for s in segs] == list(range(1, len(segs) + 1))
        gt = np.kron(ex["panoptic"], np.ones((upscale, upscale), np.int64))
        cats = np.array([s["category_id"] for s in segs], np.int64)
        crowd = np.array([bool(s["iscrowd"]) for s in segs])
        area = np.array([float((gt == s["id"]).sum()) for s in segs])
        for _ in range(samples):
            pairs.append((*predictions_of(rng, gt, cats), gt, cats, crowd, area))
    p = max(1, max(len(x[1]) for x in pairs))
    g = max(len(x[3]) for x in pairs)

    def pad(a, n, value=0):
        return np.concatenate([a, np.full(n - len(a), value, a.dtype)])

    arrays = (np.stack([x[0] for x in pairs]), np.stack([pad(x[1], p) for x in pairs]),
              np.stack([x[2] for x in pairs]), np.stack([pad(x[3], g) for x in pairs]),
              np.stack([pad(x[4], g, False) for x in pairs]),
              np.stack([pad(x[5], g, 0.0) for x in pairs]))
    num_categories = len(world.thing_classes) + len(world.stuff_classes)
    return pairs, arrays, num_categories


def annotations(pair) -> tuple[dict, dict]:
    pred, pred_cat, _, gt_cat, crowd, area = pair
    gt_ann = {"image_id": 1, "file_name": "", "segments_info": [
        {"id": k + 1, "category_id": int(c), "iscrowd": int(w), "area": float(a)}
        for k, (c, w, a) in enumerate(zip(gt_cat, crowd, area, strict=True))]}
    pred_ann = {"image_id": 1, "file_name": "", "segments_info": [
        {"id": int(k), "category_id": int(pred_cat[k - 1])} for k in np.unique(pred) if k > 0]}
    return gt_ann, pred_ann


def rules_in_memory(pred: np.ndarray, gt: np.ndarray, gt_ann: dict, pred_ann: dict,
                    categories: dict) -> float:
    """panopticapi's per-image rules on arrays in memory (its loop, without the files); 1 where
    no category is counted (the reward's rule; panopticapi divides by zero)."""
    gt_segms = {el["id"]: el for el in gt_ann["segments_info"]}
    pred_segms = {el["id"]: dict(el) for el in pred_ann["segments_info"]}
    labels, counts = np.unique(pred, return_counts=True)
    for label, count in zip(labels, counts, strict=True):
        if label:
            pred_segms[label]["area"] = count
    joint, inter = np.unique(gt.astype(np.uint64) * OFFSET + pred.astype(np.uint64),
                             return_counts=True)
    pairs = {(int(j // OFFSET), int(j % OFFSET)): int(n) for j, n in zip(joint, inter,
                                                                         strict=True)}
    stat = {c: [0.0, 0, 0, 0] for c in categories}  # iou, tp, fp, fn
    gt_matched, pred_matched = set(), set()
    for (g, p), n in pairs.items():
        if g not in gt_segms or p not in pred_segms or gt_segms[g]["iscrowd"]:
            continue
        if gt_segms[g]["category_id"] != pred_segms[p]["category_id"]:
            continue
        union = pred_segms[p]["area"] + gt_segms[g]["area"] - n - pairs.get((0, p), 0)
        if n / union > 0.5:
            stat[gt_segms[g]["category_id"]][0] += n / union
            stat[gt_segms[g]["category_id"]][1] += 1
            gt_matched.add(g)
            pred_matched.add(p)
    crowd = {}
    for g, info in gt_segms.items():
        if g in gt_matched:
            continue
        if info["iscrowd"]:
            crowd[info["category_id"]] = g
            continue
        stat[info["category_id"]][3] += 1
    for p, info in pred_segms.items():
        if p in pred_matched:
            continue
        n = pairs.get((0, p), 0) + pairs.get((crowd.get(info["category_id"], -1), p), 0)
        if n / info["area"] <= 0.5:
            stat[info["category_id"]][2] += 1
    per = [iou / (tp + 0.5 * fp + 0.5 * fn) for iou, tp, fp, fn in stat.values()
           if tp + fp + fn]
    return float(np.mean(per)) if per else 1.0


def run(name: str, images: int, samples: int, upscale: int, repeats: int, seed: int
        ) -> list[tuple[str, str, float]]:
    import jax
    import jax.numpy as jnp
    from panopticapi.evaluation import pq_compute_single_core
    from panopticapi.utils import id2rgb
    from PIL import Image

    pairs, arrays, num_categories = make_pairs(images, samples, upscale, seed)
    categories = {c: {"id": c, "isthing": 0} for c in range(1, num_categories + 1)}
    anns = [annotations(x) for x in pairs]
    tmp = Path(tempfile.mkdtemp(prefix="bench_pq_"))
    (tmp / "gt").mkdir()
    (tmp / "pred").mkdir()
    for k, (x, (gt_ann, pred_ann)) in enumerate(zip(pairs, anns, strict=True)):
        gt_ann["file_name"] = pred_ann["file_name"] = f"{k}.png"
        Image.fromarray(id2rgb(x[0])).save(tmp / "pred" / f"{k}.png")
        Image.fromarray(id2rgb(x[2])).save(tmp / "gt" / f"{k}.png")

    def panopticapi_all():
        out = []
        with contextlib.redirect_stdout(io.StringIO()):
            for gt_ann, pred_ann in anns:
                stat = pq_compute_single_core(0, [(gt_ann, pred_ann)], str(tmp / "gt"),
                                              str(tmp / "pred"), categories)
                try:
                    out.append(stat.pq_average(categories, None)[0]["pq"])
                except ZeroDivisionError:
                    out.append(1.0)  # the reward's documented rule
        return np.array(out)

    def memory_all():
        return np.array([rules_in_memory(x[0], x[2], a[0], a[1], categories)
                         for x, a in zip(pairs, anns, strict=True)])

    fn = jax.jit(lambda *a: pq.per_image_pq(*a, num_categories, xp=jnp))
    dev = [jnp.asarray(a) for a in arrays]
    t_api, want = best_of(panopticapi_all, 1)
    t_mem, mem = best_of(memory_all, repeats)
    t_np, ours = best_of(lambda: pq.pq_reward(*arrays, num_categories), repeats)
    jax.block_until_ready(fn(*dev))  # compiles
    t_jax, ours_jax = best_of(lambda: jax.block_until_ready(fn(*dev)), repeats)
    assert np.abs(mem - want).max() < 1e-12, "the in-memory port differs from panopticapi"
    assert np.abs(ours - want).max() < 1e-12, "ours (NumPy) differs from panopticapi"
    assert np.abs(np.asarray(ours_jax) - want).max() < 1e-5, "ours (JAX) differs"
    print(f"{name}: {len(pairs)} pairs, equal to panopticapi (NumPy to 1e-12, JAX float32 to "
          f"1e-5); PQ mean {want.mean():.3f}, {int((want == 1).sum())} pairs at 1")
    n = len(pairs)
    return [(name, label, t / n * 1e3) for label, t in (
        ("ours, NumPy float64 (batched)", t_np), ("ours, JAX float32 (jit, batched)", t_jax),
        ("panopticapi pq_compute_single_core (PNG files)", t_api),
        ("panopticapi's rules in memory (per image)", t_mem))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--upscale", type=int, default=8, help="also time maps k× larger per side")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-save", action="store_true", help="print only; leave results.json")
    args = ap.parse_args()
    rows = run(f"cpu world 64² B={args.images}×{args.samples}", args.images, args.samples, 1,
               args.repeats, args.seed)
    if args.upscale > 1:
        side = 64 * args.upscale
        rows += run(f"the same maps at {side}² B={args.images}×{args.samples}", args.images,
                    args.samples, args.upscale, args.repeats, args.seed)
    suite = Suite("panoptic_reward", "Per-image PQ: ours (batched NumPy / jitted JAX) vs "
                                     "panopticapi on the same pairs")
    for setting in dict.fromkeys(r[0] for r in rows):
        times = {label: ms for s, label, ms in rows if s == setting}
        api = times["panopticapi pq_compute_single_core (PNG files)"]
        mem = times["panopticapi's rules in memory (per image)"]
        for label, ms in times.items():
            kw: dict = {}
            if label.startswith("ours"):
                kw = dict(reference="panopticapi pq_compute_single_core", ratio=api / ms,
                          target=">= 20x panopticapi", met=api / ms >= 20,
                          note=f"{mem / ms:.3g}x panopticapi's rules in memory")
            suite.add(f"{label}, {setting}", ms, "ms/image", **kw)
    suite.notes += [
        "outputs agree on every pair before timing (NumPy to 1e-12, JAX float32 to 1e-5)",
        "panopticapi's time includes reading and decoding its two PNGs per image (its only "
        "entry point); the in-memory port runs the same per-image rules without files",
        f"best of {args.repeats} runs (panopticapi: 1); ms per image = batch time / pairs"]
    suite.finish(save=not args.no_save)


if __name__ == "__main__":
    main()
