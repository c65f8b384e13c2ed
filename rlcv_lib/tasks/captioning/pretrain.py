"""Captioning MLE pretraining on the scenes world, its validation curve and the wrong-image control.

The glue between the scenes data (:mod:`rlcv_lib.data`), the captioning task
(:mod:`rlcv_lib.tasks.captioning.task`), the core MLE step and the trainer::

    cfg = get_config("cpu", overrides={"train.num_steps": 3000}, task="captioning")
    run = core.pretrain.pretrain(RECIPE, cfg, "runs/cap_mle")   # with a validation CIDEr-D curve
    control = core.evaluate.wrong_image_control(RECIPE, run.model, run.task, run.val.batch)

* **Batches** (:func:`make_batch_fn`): step ``s`` is ``Loader.batch(s)`` plus ``tokens`` int32
  [B,L]: example ``i`` is trained on its caption ``k = default_rng([seed, s, i]).integers(M)``
  of its ``M`` references, so the whole batch is a pure function of (seed, step). The batch keeps
  ``captions`` [B,M] and ``image_id`` [B] (what the reward reads) next to ``image`` and
  ``tokens``.
* **Evaluation** (:func:`make_evaluator`): greedy captions of a fixed set of validation images,
  scored two ways: ``reward`` is the task's fast CIDEr-D (training-set document frequencies, the
  RL reward) and ``CIDEr-D``/``BLEU-4``/``ROUGE-L`` are pycocoevalcap's (``task.evaluate``,
  corpus mode), plus the mean caption length and the teacher-forced NLL per word class.
* **Wrong-image control** (docs/design.md §8.4,
  :func:`rlcv_lib.core.evaluate.wrong_image_control`): validation NLL per word class
  (:data:`WORD_CLASSES`: colour, count, shape, relation, other, EOS) of each image's first
  reference, with the true images and with the images rolled by one within the batch. A model
  that reads the image loses much more on colour, count and shape words with the wrong image
  than on the grammatical filler words.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rlcv_lib.core import evaluate as ev
from rlcv_lib.core import pretrain as mle
from rlcv_lib.data import captions as captions_lib
from rlcv_lib.data import palette, pipeline
from rlcv_lib.tasks.captioning import task as cap

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
    """``step -> {"image", "tokens", "captions", "image_id"}``, a pure function of (seed,
    step) (``image_id`` for the grounded reward's truth)."""

    def batch_fn(step: int) -> dict[str, np.ndarray]:
        b = loader.batch(step)
        return {"image": b["image"], "tokens": tokenize_batch(task, b["captions"], seed, step),
                "captions": b["captions"], "image_id": b["image_id"]}

    return batch_fn


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


def truth_tokens(task: cap.CaptioningTask, batch: dict[str, np.ndarray], index: int = 0
                 ) -> np.ndarray:
    """int32 [B,L]: reference ``index`` of each image of ``batch["captions"]``."""
    return np.stack([task.tokenize({"captions": c}, index) for c in batch["captions"]])


def make_evaluator(task: cap.CaptioningTask, val: ev.Split):
    """``fn(model, step) -> {reward, CIDEr-D, BLEU-4, ROUGE-L, empty, words, nll_*}`` of greedy
    captions of the validation images (CIDEr-D and BLEU-4 as pycocoevalcap returns them, not
    ×100)."""
    truth = truth_tokens(task, val.batch)
    masks = word_class_masks(task, truth)

    def evaluate(model, step: int = 0) -> dict[str, float]:
        tokens = ev.decode(model, task, val.batch["image"])  # [B,L]
        reward, aux = task.reward(tokens[:, None], val.batch)
        metrics = task.evaluate([task.detokenize(t) for t in tokens], val.examples)
        nll = ev.masked_nll(model, task, val.batch["image"], truth, masks)
        return ({"reward": float(reward.mean()), "words": float(aux["caption_words"])}
                | metrics | {f"nll_{k}": v for k, v in nll.items()})

    return evaluate


RECIPE = mle.Recipe(
    name="captioning", make_task=make_task, make_batch_fn=make_batch_fn,
    make_evaluator=make_evaluator, truth_tokens=truth_tokens, token_masks=word_class_masks)
"""Captioning's part of :mod:`rlcv_lib.core.pretrain` (its control reads each image's first
reference)."""
