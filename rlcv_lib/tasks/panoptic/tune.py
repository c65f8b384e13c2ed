"""Panoptic reward tuning: per-image PQ from one UViM stage II model, beside the controls that
test the paper's mechanism.

The experiment on the scenes world (what notebook ``06_panoptic`` and ``python -m rlcv_lib tune
panoptic`` run)::

    pre = shipped.load_or_pretrain(STAGE2_RECIPE, cfg, workdir / "mle")   # stage II by MLE
    result = tune_and_evaluate(cfg, workdir=workdir, pre=pre)

* **One run** (``tuned``): REINFORCE on the per-image PQ of each sample's decoded segments
  (:func:`~rlcv_lib.tasks.panoptic.reward.pq_reward`), ``rl.num_samples`` code sequences per
  image at temperature 1, leave-one-out baseline.
* **Curve and checkpoint choice** (:func:`make_tune_eval`): on ``panoptic.val_size``
  validation scenes every ``tune.eval_every`` updates, the mean reward of ``rl.num_samples``
  samples per image (a fixed key) and the judges of greedy decoding (UViM predicts at
  near-zero temperature) and of the first sample; the checkpoint with the best greedy
  validation PQ is chosen (the MLE model, step 0, is a candidate). The test split is not read
  while choosing.
* **Controls**: MLE decoded at temperature 1; MLE trained on for as long as tuning's updates
  took (``MLE as long``); and MLE with a **minimum-segment-area filter**
  (``MLE + area filter``: segments below the threshold become void; the threshold of
  ``panoptic.min_area_candidates`` with the best greedy validation PQ of the MLE model). The
  paper says tuning "removes many incoherent predictions, especially for small-scale
  objects"; the filter removes small ones by rule, so a tuned model that does not beat it has
  learnt no more than the filter.
* **Rows** (:func:`evaluate_models`): every model greedy and at temperature 1 (one sample per
  test image, a fixed key), the filter control greedy, and the reference row ``stage I
  oracle`` (stage I's own codes of the test images decoded): panopticapi's PQ, SQ and RQ for
  all, thing and stuff categories (:func:`~rlcv_lib.tasks.panoptic.judges.panopticapi_metrics`),
  the mean per-image PQ (the reward), and the predicted segments and incoherent segments per
  image by size (:func:`~rlcv_lib.tasks.panoptic.judges.segment_judges`).
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from rlcv_lib.core import evaluate as ev
from rlcv_lib.core import shipped
from rlcv_lib.core import tune as tuning
from rlcv_lib.tasks.panoptic import judges
from rlcv_lib.tasks.panoptic import pretrain as pp
from rlcv_lib.tasks.panoptic import task as pan
from rlcv_lib.tasks.uvim import stage2

RUN = "tuned"
"""The tuning run's name (its reward: per-image PQ)."""
MLE_AS_LONG = "MLE as long"
"""The control trained on by MLE for the seconds of updates tuning took."""
AREA_FILTER = "MLE + area filter"
"""The control: MLE's greedy segments with those below the chosen area made void."""
ORACLE = "stage I oracle"
"""The reference row: stage I's own codes of the images, decoded (what stage II can reach)."""
DECODINGS = {"greedy": None, "T=1": 1}
"""Test decodings: greedy (UViM's near-zero temperature), one sample at temperature 1."""
SELECT_ON = "pq"
"""The checkpoint choice's metric: greedy mean per-image PQ on validation."""


def run_dirs(workdir: str | Path) -> dict[str, Path]:
    """Where the parts of :func:`tune_and_evaluate` live under ``workdir``."""
    root = Path(workdir)
    return {"mle": root / "panoptic_stage2", "cache": root / "scenes_cache",
            RUN: root / "panoptic_tune"}


def num_categories(cfg: Any) -> int:
    """C: the task's categories (semantic channel c is category c, 0 void)."""
    return len(pan.categories(cfg.world, cfg.panoptic))


def predicted_segments(task: stage2.Stage2Task, tokens: np.ndarray,
                       batch: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(``pred_map`` [B,H,W], ``pred_category`` [B,N]) of code tokens [B,L] decoded by the
    frozen stage I with the stage II ``batch``'s context."""
    return pp.segments(task.decode(tokens, batch["context"]))


def judge_segments(pred_map: np.ndarray, pred_category: np.ndarray,
                   batch: Mapping[str, np.ndarray], cfg: Any) -> dict[str, float]:
    """Mean per-image judges (:func:`~rlcv_lib.tasks.panoptic.judges.segment_judges`) of
    predicted segments on a stage II ``batch`` (its ``gt_*`` tables)."""
    return judges.mean_judges(judges.segment_judges(
        pred_map, pred_category, batch, num_categories(cfg), cfg.panoptic.size_edges))


def make_tune_eval(task: stage2.Stage2Task, val: ev.Split, cfg: Any, key: jax.Array,
                   keeper: ev.BestState | None = None):
    """``fn(model, step) -> metrics`` on ``val``: ``reward_sampled`` (the mean per-image PQ of
    ``rl.num_samples`` samples per image drawn with ``key``), the judges of greedy decoding
    (``pq``, ``segments``, ``incoherent``, by size) and ``pq_sampled``, ``segments_sampled``,
    ``incoherent_sampled`` of each image's first sample; offered to ``keeper``
    (:data:`SELECT_ON`)."""
    batch = task.batch(val.batch)

    def evaluate(model, step: int = 0) -> dict[str, float]:
        samples = ev.sample(model, task, batch["image"], cfg.rl.num_samples, key)  # [B,N,L]
        rewards, _ = task.reward(samples, batch)
        greedy = judge_segments(*predicted_segments(
            task, ev.decode(model, task, batch["image"]), batch), batch, cfg)
        first = judge_segments(*predicted_segments(task, samples[:, 0], batch), batch, cfg)
        metrics = {"reward_sampled": float(rewards.mean()), **greedy,
                   **{f"{k}_sampled": first[k] for k in ("pq", "segments", "incoherent")}}
        if keeper is not None:
            keeper.offer(model, step, metrics)
        return metrics

    return evaluate


def choose_area_filter(model, task: stage2.Stage2Task, val: ev.Split, cfg: Any
                       ) -> tuple[int, dict[int, float]]:
    """(threshold, {candidate: validation PQ}): the ``panoptic.min_area_candidates`` pixel
    area whose filter gives ``model``'s greedy validation segments the best mean PQ."""
    batch = task.batch(val.batch)
    pred = predicted_segments(task, ev.decode(model, task, batch["image"]), batch)
    return judges.choose_min_area(
        lambda a: judge_segments(*judges.area_filter(*pred, a), batch, cfg)["pq"],
        cfg.panoptic.min_area_candidates)


def oracle_tokens(task: stage2.Stage2Task, batch: Mapping[str, np.ndarray]) -> np.ndarray:
    """int32 [B,L]: stage I's own codes (+ 1) of a stage II batch (the oracle's tokens)."""
    return stage2.tokens_of(task.codes(batch))


def row_of(pred: tuple[np.ndarray, np.ndarray], batch: Mapping[str, np.ndarray],
           split: ev.Split, cfg: Any) -> dict[str, float]:
    """One test row: panopticapi's metrics and the mean per-image judges of ``pred``."""
    return {**judges.panopticapi_metrics(split.examples, *pred,
                                          pan.categories(cfg.world, cfg.panoptic)),
            **judge_segments(*pred, batch, cfg)}


def evaluate_models(models: Mapping[str, Any], task: stage2.Stage2Task, test: ev.Split,
                    cfg: Any, key: jax.Array, min_area: int
                    ) -> tuple[list[dict[str, Any]], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """(rows, segments): the rows of the module docstring on ``test``; ``segments[name]`` the
    predicted (map, categories) of each row (``"<model>, <decoding>"``, the oracle by name)."""
    batch = task.batch(test.batch)
    preds = {ORACLE: predicted_segments(task, oracle_tokens(task, batch), batch)}
    rows = [{"model": ORACLE, "decoding": "reference", **row_of(preds[ORACLE], batch, test, cfg)}]
    for name, model in models.items():
        for decoding, temperature in DECODINGS.items():
            if temperature is None:
                tokens = ev.decode(model, task, batch["image"])
            else:
                tokens = ev.sample(model, task, batch["image"], 1, key)[:, 0]
            pred = preds[f"{name}, {decoding}"] = predicted_segments(task, tokens, batch)
            rows.append({"model": name, "decoding": decoding, **row_of(pred, batch, test, cfg)})
            if name == "MLE" and temperature is None:
                filtered = preds[f"{AREA_FILTER}, greedy"] = judges.area_filter(*pred, min_area)
                rows.append({"model": AREA_FILTER, "decoding": "greedy",
                             **row_of(filtered, batch, test, cfg)})
    return rows, preds


@dataclasses.dataclass
class PanopticTuning:
    """What :func:`tune_and_evaluate` trained and measured."""

    pre: shipped.Pretrained
    val: ev.Split
    headroom: dict[str, float]
    """Validation mean per-image PQ of the stage I oracle and of the MLE model (greedy)."""
    min_area: int
    area_filter_val: dict[int, float]
    """Validation PQ of MLE greedy under each area filter candidate."""
    run: tuning.Tuned
    test: ev.Split
    rows: list[dict[str, Any]]
    segments: dict[str, tuple[np.ndarray, np.ndarray]]
    """Predicted test (map, categories) by ``"<model>, <decoding>"`` and the oracle by name."""
    controls: dict[str, Any] = dataclasses.field(default_factory=dict)
    control_info: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)

    @property
    def models(self) -> dict[str, Any]:
        """Every model of the table: MLE, the controls, the chosen checkpoint, and the run's
        last update (``"tuned, last update"``, a diagnostic not chosen on validation)."""
        last = {} if self.run.last is None else {f"{RUN}, last update": self.run.last}
        return {"MLE": self.pre.model, **self.controls, RUN: self.run.model, **last}

    def summary(self) -> dict[str, Any]:
        """The JSON-able result (what ``python -m rlcv_lib tune panoptic`` writes)."""
        return {"test": {f"{r['model']}, {r['decoding']}": r for r in self.rows},
                "gain_over": "MLE, greedy",  # the row a seed spread's gains are measured from
                "best_step": {RUN: self.run.best_step},
                "tune_seconds": {RUN: self.run.seconds},
                "headroom": self.headroom, "min_area": self.min_area,
                "area_filter_validation": {str(k): v for k, v in self.area_filter_val.items()},
                "controls": self.control_info,
                "curve": [{"model": RUN, **e} for e in self.run.history.records("eval")],
                "mle_source": self.pre.source, "mle_encoder": self.pre.encoder_start}


def tune_and_evaluate(cfg: Any, *, workdir: str | Path, pre: shipped.Pretrained | None = None,
                      start: str | Path | None = None, cache_dir: str | None = None,
                      progress: bool = False,
                      on_eval: Callable[[dict[str, Any]], None] | None = None,
                      mesh: Any = None) -> PanopticTuning:
    """Panoptic's main path: the stage II MLE model (``pre``, else the shipped one or
    ``start``; without one, MLE in ``workdir``), the validation headroom and area-filter
    choice, the tuning run with its checkpoint chosen on validation, the control ``MLE as
    long`` (with ``panoptic.mle_as_long``) and the test rows (:func:`evaluate_models`).
    ``on_eval`` sees every validation evaluation after the run. ``mesh`` is accepted for the
    command line's signature; panoptic tunes on one device."""
    del mesh
    dirs = run_dirs(workdir)
    if pre is None:
        pre = shipped.load_or_pretrain(pp.STAGE2_RECIPE, cfg, dirs["mle"], path=start,
                                       cache_dir=cache_dir, progress=progress)
    task = pre.task
    val = ev.load_split(cfg, "validation", cfg.panoptic.val_size, cache_dir)
    key = jax.random.key(ev.seed_for(cfg.run.seed, "eval"))
    min_area, area_val = choose_area_filter(pre.model, task, val, cfg)
    shutil.rmtree(dirs[RUN], ignore_errors=True)  # a result never comes from older code
    run = tuning.tune_and_select(
        pp.STAGE2_RECIPE, cfg, nnx.clone(pre.model), task, dirs[RUN], name=RUN,
        select_on=SELECT_ON, make_eval=lambda keeper: make_tune_eval(task, val, cfg, key, keeper),
        cache_dir=cache_dir, progress=progress, desc="panoptic REINFORCE (per-image PQ)")
    evals = run.history.records("eval")
    if on_eval is not None:
        for e in evals:
            on_eval({"model": RUN, **e})
    vbatch = task.batch(val.batch)
    headroom = {"oracle_pq": judge_segments(*predicted_segments(
        task, oracle_tokens(task, vbatch), vbatch), vbatch, cfg)["pq"],
        "mle_pq": evals[0]["pq"]}  # step 0: the MLE model
    controls, info = {}, {}
    if cfg.panoptic.mle_as_long:
        seconds = ev.update_seconds(run.history)
        controls[MLE_AS_LONG], info[MLE_AS_LONG] = ev.continue_mle(
            pp.STAGE2_RECIPE, cfg, pre.model, task, seconds, cache_dir=cache_dir)
    test = ev.load_split(cfg, "test", cfg.run.eval_examples, cache_dir)
    result = PanopticTuning(pre, val, headroom, min_area, area_val, run, test, [], {},
                            controls, info)
    result.rows, result.segments = evaluate_models(result.models, task, test, cfg, key,
                                                   min_area)
    return result
