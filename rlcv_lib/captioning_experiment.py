"""Captioning MLE pretraining on the scenes world, its validation curve and the wrong-image control.

The glue between the scenes data (:mod:`rlcv_lib.data`), the captioning task
(:mod:`rlcv_lib.tasks.captioning`), the core MLE step and the trainer::

    cfg = get_config("cpu", overrides={"train.num_steps": 3000})
    run = pretrain(cfg, "runs/cap_mle")          # fit() with a validation CIDEr-D curve
    control = wrong_image_control(run.model, run.task, run.val_batch)

* **Batches** (:func:`make_batch_fn`): step ``s`` is ``Loader.batch(s)`` plus ``tokens`` int32
  [B,L]: example ``i`` is trained on its caption ``k = default_rng([seed, s, i]).integers(M)``
  of its ``M`` references, so the whole batch is a pure function of (seed, step). The batch keeps
  ``captions`` [B,M] (what the reward reads) next to ``image`` and ``tokens``.
* **Evaluation** (:func:`make_evaluator`): greedy captions of a fixed set of validation images,
  scored two ways: ``reward`` is the task's fast CIDEr-D (training-set document frequencies, the
  RL reward) and ``CIDEr-D``/``BLEU-4``/``ROUGE-L`` are pycocoevalcap's (``task.evaluate``,
  corpus mode), plus the mean caption length and the teacher-forced NLL per word class.
* **Wrong-image control** (DESIGN §8, :func:`wrong_image_control`): validation NLL per word class
  (:data:`WORD_CLASSES`: colour, count, shape, relation, other, EOS) of each image's first
  reference, with the true images and with the images rolled by one within the batch. A model
  that reads the image loses much more on colour, count and shape words with the wrong image
  than on the grammatical filler words.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rlcv_lib import checkpoint, optim, sampling, steps, train
from rlcv_lib.data import captions as captions_lib
from rlcv_lib.data import palette, pipeline, sources
from rlcv_lib.history import History
from rlcv_lib.models import build_model
from rlcv_lib.tasks import captioning as cap

COLOUR_WORDS = frozenset(palette.COLOR_NAMES)
COUNT_WORDS = frozenset(captions_lib.NUMBER_WORDS)
SHAPE_WORDS = frozenset(w for forms in captions_lib.SHAPE_NOUNS.values()
                        for pair in forms for phrase in pair for w in phrase.split())
"""Every word of the shape nouns and their synonyms ("circles", "hollow", "outline", "plus")."""
RELATION_WORDS = frozenset(w for phrases in captions_lib.RELATIONS.values()
                           for p in phrases for w in p.split() if w not in ("of", "to", "the"))
"""left, right, above, below, beneath."""
WORD_CLASSES = ("colour", "count", "shape", "relation", "other", "eos")
"""Target-token classes of the wrong-image control (see :func:`word_class_masks`)."""


def make_task(cfg: Any, cache_dir: str | None = None) -> cap.CaptioningTask:
    """The captioning task of ``cfg`` (sections ``captioning`` and ``world``)."""
    return cap.CaptioningTask.for_world(cfg.world, cfg.captioning, cache_dir=cache_dir)


def caption_choice(seed: int, step: int, batch_size: int, num_captions: int = 5) -> np.ndarray:
    """int [B]: which reference each example of step ``step`` is trained on."""
    return np.array([np.random.default_rng([int(seed), int(step), i, 0xCA9]).integers(
        num_captions) for i in range(batch_size)])


def tokenize_batch(task: cap.CaptioningTask, captions: np.ndarray, seed: int, step: int
                   ) -> np.ndarray:
    """MLE targets int32 [B,L]: caption :func:`caption_choice` of each row of ``captions``
    [B,M] (str)."""
    ks = caption_choice(seed, step, len(captions), np.shape(captions)[1])
    return np.stack([task.tokenize({"captions": c}, k) for c, k in zip(captions, ks,
                                                                        strict=True)])


def make_batch_fn(task: cap.CaptioningTask, loader: pipeline.Loader, seed: int):
    """``step -> {"image", "tokens", "captions"}``, a pure function of (seed, step)."""

    def batch_fn(step: int) -> dict[str, np.ndarray]:
        b = loader.batch(step)
        return {"image": b["image"], "tokens": tokenize_batch(task, b["captions"], seed, step),
                "captions": b["captions"]}

    return batch_fn


def validation_set(cfg: Any, num_examples: int, cache_dir: str | None = None
                   ) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """The first ``num_examples`` validation scenes as examples (for pycocoevalcap) and as one
    collated batch."""
    src = sources.open_source("scenes", "validation", world=cfg.world, cache_dir=cache_dir,
                              size=num_examples)
    examples = [src[i] for i in range(len(src))]
    return examples, pipeline.collate(examples, max_boxes=cfg.world.max_objects)


def greedy_tokens(model, task: cap.CaptioningTask, images: np.ndarray, chunk: int = 256
                  ) -> np.ndarray:
    """int32 [B,L]: greedy captions of ``images`` [B,H,W,3] (the shared decode rule)."""
    greedy = steps.make_eval_fn(task)
    return np.concatenate([np.asarray(greedy(model, {"image": jnp.asarray(images[lo:lo + chunk])}))
                           for lo in range(0, len(images), chunk)])


def word_class_masks(task: cap.CaptioningTask, tokens: np.ndarray) -> dict[str, np.ndarray]:
    """bool [B,L] per class of :data:`WORD_CLASSES` for target ``tokens`` [B,L]: the word
    classes by vocabulary lookup, ``eos`` the EOS token; PAD positions belong to none."""
    t = np.asarray(tokens)
    names = ["<pad>", cap.EOS_WORD, cap.UNK_WORD, *task.vocab.words]
    table = {"colour": COLOUR_WORDS, "count": COUNT_WORDS, "shape": SHAPE_WORDS,
             "relation": RELATION_WORDS}
    is_word = t >= cap.UNK
    out = {}
    for k, words in table.items():
        member = np.array([w in words for w in names])  # [V]
        out[k] = member[t] & is_word
    out["other"] = is_word & ~np.any([out[k] for k in table], axis=0)
    out["eos"] = t == cap.EOS
    return out


def class_nll(model, task: cap.CaptioningTask, images: np.ndarray, tokens: np.ndarray,
              chunk: int = 256) -> dict[str, float]:
    """Mean teacher-forced NLL (nats per token) of ``tokens`` [B,L] given ``images`` [B,...],
    per class of :func:`word_class_masks`, under the task's mask."""
    spec = sampling.DecodeSpec.for_task(task)
    lp = np.concatenate([
        np.asarray(sampling.teacher_forced_jit(
            model, jnp.asarray(images[lo:lo + chunk]),
            jnp.asarray(tokens[lo:lo + chunk])[:, None], spec).logprobs[:, 0])
        for lo in range(0, len(tokens), chunk)])  # [B,L]
    return {k: float(-lp[m].mean()) if m.any() else float("nan")
            for k, m in word_class_masks(task, tokens).items()}


def truth_tokens(task: cap.CaptioningTask, batch: dict[str, np.ndarray], index: int = 0
                 ) -> np.ndarray:
    """int32 [B,L]: reference ``index`` of each image of ``batch["captions"]``."""
    return np.stack([task.tokenize({"captions": c}, index) for c in batch["captions"]])


def make_evaluator(task: cap.CaptioningTask, examples: list[dict[str, Any]],
                   val_batch: dict[str, np.ndarray]):
    """``fn(model, step) -> {reward, CIDEr-D, BLEU-4, ROUGE-L, empty, words, nll_*}`` of greedy
    captions of the validation images (CIDEr-D and BLEU-4 as pycocoevalcap returns them, not
    ×100)."""
    truth = truth_tokens(task, val_batch)

    def evaluate(model, step: int = 0) -> dict[str, float]:
        tokens = greedy_tokens(model, task, val_batch["image"])  # [B,L]
        reward, aux = task.reward(tokens[:, None], val_batch)
        metrics = task.evaluate([task.detokenize(t) for t in tokens], examples)
        nll = class_nll(model, task, val_batch["image"], truth)
        return ({"reward": float(reward.mean()), "words": float(aux["caption_words"])}
                | metrics | {f"nll_{k}": v for k, v in nll.items()})

    return evaluate


def wrong_image_control(model, task: cap.CaptioningTask, batch: dict[str, np.ndarray]
                        ) -> dict[str, dict[str, float]]:
    """NLL per word class of each image's first reference with its true images and with the
    images rolled by one (each caption paired with another scene): ``{"true": {...}, "wrong":
    {...}, "gap": wrong - true}``. A gap near 0 means the model ignores the image for that
    class."""
    if len(batch["image"]) < 2:
        raise ValueError(f"the wrong-image control needs >= 2 images, got {len(batch['image'])}")
    tokens = truth_tokens(task, batch)
    true = class_nll(model, task, batch["image"], tokens)
    wrong = class_nll(model, task, np.roll(batch["image"], 1, axis=0), tokens)
    return {"true": true, "wrong": wrong, "gap": {k: wrong[k] - true[k] for k in true}}


@dataclasses.dataclass
class PretrainResult:
    """What :func:`pretrain` trained and measured."""

    model: Any
    task: cap.CaptioningTask
    history: History
    val_batch: dict[str, np.ndarray]
    seconds: float


def pretrain(cfg: Any, workdir: str | Path | None, *, eval_examples: int = 256,
             train_size: int | None = None, cache_dir: str | None = None,
             progress: bool = True) -> PretrainResult:
    """MLE pretraining of ``cfg.model`` on ``cfg.world``'s captions with ``cfg.train`` (resumes
    from ``workdir``'s checkpoints); validation metrics (:func:`make_evaluator` on the first
    ``eval_examples`` validation scenes) every ``train.eval_every`` updates and at step 0.
    ``train_size``: stream over only the first that many training scenes (None: the split)."""
    task = make_task(cfg, cache_dir)
    model = build_model(cfg.model, task, seed=cfg.run.seed)
    tcfg = cfg.train
    src = sources.open_source("scenes", "train", world=cfg.world, cache_dir=cache_dir,
                              size=train_size)
    loader = pipeline.Loader(src, tcfg.micro_batch_size, seed=cfg.run.seed,
                             max_boxes=cfg.world.max_objects)
    examples, val_batch = validation_set(cfg, eval_examples, cache_dir)
    result = train.fit(model, optim.make_optimizer(model, tcfg), steps.make_mle_step(task),
                       make_batch_fn(task, loader, cfg.run.seed), seed=cfg.run.seed,
                       workdir=workdir, eval_fn=make_evaluator(task, examples, val_batch),
                       eval_at_start=True, progress=progress, desc="captioning MLE",
                       **train.fit_kwargs(tcfg))
    return PretrainResult(model=model, task=task, history=result.history, val_batch=val_batch,
                          seconds=result.seconds)


def restore_model(cfg: Any, workdir: str | Path, step: int | None = None,
                  cache_dir: str | None = None):
    """``(model, task, step)``: the model of :func:`pretrain`'s checkpoint ``step`` (default the
    latest) in ``workdir``."""
    task = make_task(cfg, cache_dir)
    model = build_model(cfg.model, task, seed=cfg.run.seed)
    step = checkpoint.restore(Path(workdir) / "checkpoints", model, step=step)
    return model, task, step


def _main() -> None:
    """``python -m rlcv_lib.captioning_experiment PRESET WORKDIR [key=value ...]``: pretrain and
    print the validation curve and the wrong-image control. With ``control`` before PRESET: only
    the control (and one evaluation) of WORKDIR's latest checkpoint."""
    import json
    import sys

    from rlcv_lib.config import get_config

    args = sys.argv[1:]
    control_only = args[0] == "control"
    preset, workdir, *kv = args[1:] if control_only else args
    overrides = dict(a.split("=", 1) for a in kv)
    train_size = overrides.pop("train_size", None)
    cfg = get_config(preset, overrides=overrides)
    cache_dir = str(Path(workdir).parent / "scenes_cache")
    if control_only:
        model, task, step = restore_model(cfg, workdir, cache_dir=cache_dir)
        examples, val_batch = validation_set(cfg, 256, cache_dir)
        print(json.dumps({"step": step, **make_evaluator(task, examples, val_batch)(model)}))
        print(json.dumps({"wrong_image_control": wrong_image_control(model, task, val_batch)}))
        return
    run = pretrain(cfg, workdir, train_size=None if train_size is None else int(train_size),
                   cache_dir=cache_dir, progress=False)
    for rec in run.history.records():
        print(json.dumps(rec), flush=True)
    control = wrong_image_control(run.model, run.task, run.val_batch)
    print(json.dumps({"wrong_image_control": control}), flush=True)
    jax.effects_barrier()


if __name__ == "__main__":
    _main()
