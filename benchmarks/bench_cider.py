"""CIDEr-D reward speed: our vectorised reward vs pycocoevalcap, per B×N batch.

Both compute the same quantity: CIDEr-D of B×N sampled captions against their images' five
references, with document frequencies fixed from the training references. Ours is
``CaptioningTask.reward`` on the token samples (decoding included); pycocoevalcap is its own
``CiderScorer`` on the decoded strings with the same frequencies injected
(``rewards.cider.ReferenceCider``), one scorer per batch as a naive SCST reward would call it.
Outputs are checked equal (1e-6) before anything is timed; times are medians of interleaved
runs, in ms; ratios are pycocoevalcap's time over ours. The samples are realistic scenes
captions: each image's own references, other images' captions, truncations and repetitions.

    python benchmarks/bench_cider.py [--train-images 2000] [--sizes 16x8 64x8 256x8] [--no-save]

docs/design.md §6 target: ≥ 10× pycocoevalcap per B×N batch, checked on the cold call (references
encoded inside the call, the harder case; the warm ratio is reported alongside).
"""

from __future__ import annotations

import argparse
import functools
import time

import numpy as np
from record import Suite

from rlcv_lib.data import memory, scenes
from rlcv_lib.tasks.captioning.reward import ReferenceCider
from rlcv_lib.tasks.captioning.task import EOS, EOS_WORD, CaptioningConfig, CaptioningTask


def sample_batch(task: CaptioningTask, captions: list[list[str]], b: int, n: int,
                 rng: np.random.Generator) -> np.ndarray:
    """int32 [B,N,L] token samples that look like a captioner's."""
    out = np.zeros((b, n, task.max_len), np.int32)
    for i in range(b):
        for k in range(n):
            src = captions[i] if k % 2 else captions[int(rng.integers(len(captions)))]
            words = src[int(rng.integers(len(src)))].split()
            kind = int(rng.integers(3))
            if kind == 1:
                words = words[:max(1, int(rng.integers(len(words) + 1)))]
            elif kind == 2:
                words = (words + words)[:task.max_len - 1]
            out[i, k] = task.vocab.encode(" ".join(words), task.max_len)
    return out


def medians(fns, repeat: int) -> list[float]:
    """Median wall time of each function, run interleaved (they share the machine's load)."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for t, fn in zip(times, fns, strict=True):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
    return [float(np.median(t)) for t in times]


def cold_reward(task: CaptioningTask, samples: np.ndarray, batch: dict) -> None:
    """The reward with references not yet seen (normalised and encoded in the call)."""
    task._ref_cache.clear()
    task.reward(samples, batch, None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu", help="scenes world preset")
    ap.add_argument("--train-images", type=int, default=2000,
                    help="training images whose references fix the frequencies")
    ap.add_argument("--sizes", nargs="+", default=["16x8", "64x8", "256x8"])
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--no-save", action="store_true", help="print only; leave results.json")
    args = ap.parse_args()
    world = scenes.WORLD_PRESETS[args.preset]
    train = np.asarray(memory.generate_split(world, "train", args.train_images)
                       .arrays["captions"]).tolist()
    sizes = [tuple(int(x) for x in s.split("x")) for s in args.sizes]
    val = np.asarray(memory.generate_split(world, "validation", max(b for b, _ in sizes))
                     .arrays["captions"]).tolist()
    cfg = CaptioningConfig()
    task = CaptioningTask.from_references(train, cfg)
    tail = f" {EOS_WORD}" if cfg.score_eos else ""
    judge = ReferenceCider([[c + tail for c in r] for r in train])
    rng = np.random.default_rng(0)
    suite = Suite("cider", "CIDEr-D reward per B×N batch: ours vs pycocoevalcap's CiderScorer "
                           f"(scenes {args.preset!r}, df from {args.train_images} images)")

    print(f"scenes world {args.preset!r}, df from {args.train_images} training images, "
          f"score_eos={cfg.score_eos}; median of {args.repeat} runs")
    print("ours warm: reference captions already seen (cached ids); cold: encoded in the call")
    print(f"{'B x N':>9} | {'ours warm':>10} | {'ours cold':>10} | {'pycocoevalcap (ms)':>18} | "
          f"{'warm':>7} | {'cold':>7} | {'max |diff|':>10}")
    for b, n in sizes:
        samples = sample_batch(task, val, b, n, rng)
        batch = {"captions": np.asarray(val[:b])}
        cands = [task.detokenize(s) + (tail if (s == EOS).any() else "")
                 for s in samples.reshape(b * n, -1)]
        refs = [[c + tail for c in val[i // n]] for i in range(b * n)]
        ours = task.reward(samples, batch, None)[0].ravel()
        theirs = judge.score(cands, refs)
        diff = float(np.abs(ours - theirs).max())
        if diff > 1e-6:
            raise SystemExit(f"outputs differ at {b}x{n}: max |diff| = {diff:.3g}")
        t_warm, t_cold, t_ref = medians(
            [functools.partial(task.reward, samples, batch, None),
             functools.partial(cold_reward, task, samples, batch),
             functools.partial(judge.score, cands, refs)], args.repeat)
        print(f"{f'{b} x {n}':>9} | {1e3 * t_warm:10.2f} | {1e3 * t_cold:10.2f} | "
              f"{1e3 * t_ref:18.1f} | {t_ref / t_warm:6.1f}x | {t_ref / t_cold:6.1f}x | "
              f"{diff:10.1e}")
        agree = f"max |ours - pycocoevalcap| = {diff:.1e}"
        suite.add(f"pycocoevalcap {b}x{n}", 1e3 * t_ref, "ms/batch")
        suite.add(f"ours cold {b}x{n}", 1e3 * t_cold, "ms/batch", reference="pycocoevalcap",
                  ratio=t_ref / t_cold, target=">= 10x pycocoevalcap",
                  met=t_ref / t_cold >= 10, note=agree)
        suite.add(f"ours warm {b}x{n}", 1e3 * t_warm, "ms/batch", reference="pycocoevalcap",
                  ratio=t_ref / t_warm, note="reference ids cached from an earlier call")
    suite.notes += [f"medians of {args.repeat} interleaved runs; ratio = pycocoevalcap time / "
                    "ours (same candidates, references and document frequencies; outputs "
                    "checked equal to 1e-6 first)", f"score_eos={cfg.score_eos}"]
    suite.finish(save=not args.no_save)


if __name__ == "__main__":
    main()
