"""Captioning's evaluation: decoding rules, the judge, the reward distribution, the ceiling.

* **Judge** (:func:`evaluate_models`): every model decoded by the same rules (greedy, and beam
  search of width ``captioning.beam_size`` with summed log-probabilities) on the same split and
  scored by ``task.evaluate`` (pycocoevalcap CIDEr-D, BLEU-4, ROUGE-L; METEOR and the PTB
  tokenizer only with Java; never SPICE).
* **Reward distribution** (:func:`reward_distribution`, the paper's before/after table): per
  model, the fast CIDEr-D of the greedy caption of each validation image, and of
  ``rl.num_samples`` samples per image (temperature 1, no truncation, fixed key): mean, std and
  the percentiles of :func:`rlcv_lib.core.evaluate.summarize`.
* **Ceiling** (:func:`reference_ceiling`): each reference scored by pycocoevalcap's CIDEr-D
  against the other four of its image (df from those four-reference sets), averaged over the
  five choices: what a captioner that writes like one more annotator would get. Not an upper
  bound: a model that writes the references' consensus wording scores above it (measured on
  the cpu world: ``notes/captioning_tuning.md``). :func:`leave_one_out_cider` scores a model's
  captions under exactly the same conditions (four references, the same five df tables), so
  the two numbers compare directly (the ordinary five-reference CIDEr-D is not comparable:
  more references, other df).
* **Template collapse** (:func:`caption_statistics`): how many distinct captions and words a
  set of captions uses, and which shape classes its shape nouns name (synonyms mapped to their
  class): a reward-tuned captioner can win CIDEr-D by writing one template and the shape noun
  without a synonym. :func:`collapse` gives the two distinct counts per 1,000 images for the
  results table.
* **Grounded judge** (:mod:`rlcv_lib.tasks.captioning.judge`): with the scenes' truth
  (``truths``), every results row also gets the judge's object precision, recall, F1, count
  and relation accuracy (percent) and the claims per caption behind them
  (:func:`grounded_columns`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from rlcv_lib.core import evaluate as ev
from rlcv_lib.data import captions as captions_lib
from rlcv_lib.data import stats as stats_lib
from rlcv_lib.tasks.captioning import judge as judge_lib
from rlcv_lib.tasks.captioning import task as cap


def captions_of(task: cap.CaptioningTask, tokens: np.ndarray) -> list[str]:
    """The decoded captions of ``tokens`` [B,L]."""
    return [task.detokenize(t) for t in tokens]


def score(task: cap.CaptioningTask, tokens: np.ndarray, split: ev.Split) -> dict[str, float]:
    """pycocoevalcap's metrics (``task.evaluate``) of ``tokens`` [B,L] on ``split``, plus the
    fast reward's mean (``reward``) and the mean caption length in words (``words``)."""
    return score_detailed(task, tokens, split)[0]


def score_detailed(task: cap.CaptioningTask, tokens: np.ndarray, split: ev.Split
                   ) -> tuple[dict[str, float], np.ndarray]:
    """:func:`score` and the fast CIDEr-D of each caption, float32 [B]."""
    reward, aux = task.reward(tokens[:, None], split.batch)
    metrics = task.evaluate(captions_of(task, tokens), split.examples)
    return (metrics | {"reward": float(reward.mean()), "words": float(aux["caption_words"])},
            reward[:, 0])


@dataclasses.dataclass(frozen=True)
class Decoded:
    """One model's captions of a split by one decoding rule."""

    captions: list[str]
    reward: np.ndarray
    """float32 [B], the fast CIDEr-D of each caption against its image's references."""


def collapse(captions: Sequence[str], per: int = 1000) -> dict[str, float]:
    """Distinct captions and distinct words per ``per`` images: counted over the first ``per``
    captions, or scaled by ``per / len(captions)`` when there are fewer (then an estimate)."""
    if not captions:
        raise ValueError("collapse needs at least one caption")
    stats = caption_statistics(captions[:per])
    scale = per / min(per, len(captions))
    return {f"distinct captions/{per}": stats["distinct captions"] * scale,
            f"distinct words/{per}": stats["distinct words"] * scale}


def grounded_columns(captions: Sequence[str],
                     truths: Sequence[Sequence[captions_lib.Mention]] | None
                     ) -> dict[str, float]:
    """A results row's judge columns (:func:`rlcv_lib.tasks.captioning.judge.judge_split`,
    where ``truths`` are given) and :func:`collapse` columns."""
    cols = {} if truths is None else judge_lib.judge_split(captions, truths)
    return cols | collapse(captions)


def evaluate_models(models: Mapping[str, Any], task: cap.CaptioningTask, split: ev.Split,
                    methods: Sequence[str] = ("greedy", "beam"), beam_size: int = 4,
                    truths: Sequence[Sequence[captions_lib.Mention]] | None = None
                    ) -> tuple[list[dict[str, Any]], dict[tuple[str, str], Decoded]]:
    """Every model decoded by every method on the same images and scored the same way.

    Returns the table rows ``{"model", "decoding", "CIDEr-D", "BLEU-4", "ROUGE-L", ...,
    "reward", "words", <grounded_columns>}`` (the judge's only with the scenes' ``truths``,
    one per image of ``split``) and the captions ``{(model, method): Decoded}``."""
    if truths is not None and len(truths) != len(split):
        raise ValueError(f"{len(truths)} truths for the {len(split)} images of the split")
    rows, decoded = [], {}
    for method in methods:
        for name, model in models.items():
            tokens = ev.decode(model, task, split.batch["image"], method, beam_size)
            metrics, reward = score_detailed(task, tokens, split)
            decoded[name, method] = Decoded(captions_of(task, tokens), reward)
            rows.append({"model": name, "decoding": method, **metrics,
                         **grounded_columns(decoded[name, method].captions, truths)})
    return rows, decoded


def relative_gain(rows: Sequence[Mapping[str, Any]], metric: str, base: str, other: str,
                  decoding: str) -> float:
    """``other / base - 1`` of ``metric`` between two models' rows with the same decoding."""
    pick = {r["model"]: r[metric] for r in rows if r["decoding"] == decoding}
    if base not in pick or other not in pick:
        raise KeyError(f"no {decoding!r} rows for {base!r} and {other!r}; have {sorted(pick)}")
    return float(pick[other] / pick[base] - 1.0) if pick[base] else float("inf")


def reward_distribution(model, task: cap.CaptioningTask, split: ev.Split, num_samples: int,
                        key: jax.Array) -> dict[str, dict[str, float]]:
    """``{"greedy": summarize([B]), "sampled": summarize([B·N])}``
    (:func:`rlcv_lib.core.evaluate.summarize`) of the fast CIDEr-D of the greedy caption and of
    ``num_samples`` samples of every image of ``split``."""
    greedy = ev.decode(model, task, split.batch["image"])[:, None]  # [B,1,L]
    samples = ev.sample(model, task, split.batch["image"], num_samples, key)  # [B,N,L]
    return {"greedy": ev.summarize(task.reward(greedy, split.batch)[0]),
            "sampled": ev.summarize(task.reward(samples, split.batch)[0])}


def distribution_rows(dists: Mapping[str, Mapping[str, Mapping[str, float]]]
                      ) -> list[dict[str, Any]]:
    """Table rows ``{"model", "decoding", "n", "mean", "std", "p10", ...}`` of
    ``{model: reward_distribution(...)}``, greedy rows first."""
    return [{"model": name, "decoding": method, **dist[method]}
            for method in ("greedy", "sampled") for name, dist in dists.items()]


def without_java(task: cap.CaptioningTask) -> cap.CaptioningTask:
    """A shallow copy of ``task`` whose ``evaluate`` skips the Java tools (PTB tokenizer and
    METEOR: about 14 s per call on the 2-core CPU, against 0.3 s for the rest)."""
    return task.with_config(java_metrics=False)


def reference_ceiling(split: ev.Split) -> tuple[float, np.ndarray]:
    """(mean, per-(image, reference) [B,M]) CIDEr-D of each reference against the other
    references of its image (pycocoevalcap; :func:`rlcv_lib.data.stats.reference_cider`)."""
    return stats_lib.reference_cider([[str(c) for c in ex["captions"]]
                                      for ex in split.examples])


def leave_one_out_cider(predictions: Sequence[str], split: ev.Split) -> float:
    """pycocoevalcap CIDEr-D of ``predictions`` under the ceiling's conditions: for each k,
    against every image's references except the k-th (df from those), averaged over k."""
    from pycocoevalcap.cider.cider import Cider

    refs = [[" ".join(cap.normalize(c)) for c in ex["captions"]] for ex in split.examples]
    if len(predictions) != len(refs):
        raise ValueError(f"{len(predictions)} predictions for {len(refs)} images")
    res = {i: [" ".join(cap.normalize(p))] for i, p in enumerate(predictions)}
    m = len(refs[0])
    return float(np.mean([
        Cider().compute_score({i: [c for j, c in enumerate(r) if j != k]
                               for i, r in enumerate(refs)}, res)[0] for k in range(m)]))


def _shape_patterns() -> list[tuple[str, re.Pattern]]:
    """(shape class, whole-phrase pattern) for every singular and plural synonym, longest
    phrase first (so "hollow square" is a frame, not a square)."""
    forms = [(shape, form) for shape, synonyms in captions_lib.SHAPE_NOUNS.items()
             for pair in synonyms for form in pair]
    forms.sort(key=lambda sf: -len(sf[1].split()))
    return [(shape, re.compile(rf"(?<!\S){re.escape(form)}(?!\S)")) for shape, form in forms]


def caption_statistics(captions: Sequence[str]) -> dict[str, float]:
    """Template collapse of ``captions``: ``captions``, ``distinct captions`` and ``distinct
    words`` (after :func:`rlcv_lib.tasks.captioning.task.normalize`), ``shape nouns`` (how many
    name a shape, synonyms included) and ``shape: <class>``, the share of them naming each
    shape class of :data:`rlcv_lib.data.captions.SHAPE_NOUNS` that occurs."""
    texts = [" ".join(cap.normalize(c)) for c in captions]
    counts = dict.fromkeys(captions_lib.SHAPE_NOUNS, 0)
    patterns = _shape_patterns()
    for text in texts:
        for shape, pattern in patterns:
            text, n = pattern.subn(" | ", text)
            counts[shape] += n
    total = sum(counts.values())
    out = {"captions": float(len(texts)), "distinct captions": float(len(set(texts))),
           "distinct words": float(len({w for t in texts for w in t.split()})),
           "shape nouns": float(total)}
    out.update({f"shape: {k}": v / total for k, v in counts.items() if v})
    return out
