"""Captioning reward tuning: leave-one-out against self-critical, from one MLE model.

The experiment, on the scenes world (what notebook ``04_captioning`` and ``python -m rlcv_lib
tune captioning`` run)::

    pre = shipped.load_or_pretrain(RECIPE, cfg, workdir / "mle")
    val = evaluate.load_split(cfg, "validation", cfg.captioning.val_size)
    loo = tune_and_select(cfg, nnx.clone(pre.model), pre.task, workdir / "loo", "loo", val)
    scst = tune_and_select(cfg, nnx.clone(pre.model), pre.task, workdir / "scst", "greedy", val)
    rows, captions = metrics.evaluate_models({"MLE": pre.model, "LOO": loo.model, ...}, ...)

* **Two baselines, one model.** Both tunings start from copies of the same MLE model, see the
  same batches (``core.tune.tune``'s data order depends on the seed only) and draw the same
  number of samples per image (``rl.num_samples``); only the baseline of each sample's advantage
  differs: the mean reward of the image's other N − 1 samples (leave-one-out, the paper's) or
  the reward of the image's greedy caption (self-critical sequence training, Rennie et al.
  2017, with N samples per image as in its later implementations).
* **Curve during tuning** (:func:`make_tune_eval`): on ``captioning.val_size`` fixed validation
  images, the fast CIDEr-D reward (training-set document frequencies) of ``rl.num_samples``
  samples per image drawn with a fixed key (``reward_sampled``: what REINFORCE maximises), of
  the greedy caption (``reward_greedy``), and pycocoevalcap's CIDEr-D/BLEU-4/ROUGE-L of the
  greedy captions (the judge).
* **Checkpoint choice** (:class:`~rlcv_lib.core.evaluate.BestState` on disk): the evaluation
  (step 0 = the MLE model included) with the highest validation ``captioning.select_on`` is kept
  (its parameters saved in ``workdir/best``); :func:`tune_and_select` loads it into the model
  after tuning. So a tuning that never beats MLE on validation returns the MLE model itself
  (``best_step == 0``). The test split is never looked at while choosing.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
from flax import nnx

from rlcv_lib.core import evaluate as ev
from rlcv_lib.core import shipped
from rlcv_lib.core import tune as tuning
from rlcv_lib.core.history import History
from rlcv_lib.tasks.captioning import metrics as cm
from rlcv_lib.tasks.captioning import task as cap
from rlcv_lib.tasks.captioning.pretrain import RECIPE

BASELINES = {"LOO": "loo", "SCST": "greedy"}
"""Display name -> ``rl.baseline`` of the two tunings compared."""


def run_dirs(workdir: str | Path) -> dict[str, Path]:
    """Where the parts of :func:`tune_and_evaluate` live under ``workdir``: ``mle`` (MLE from
    scratch, resumable), one tuning dir per :data:`BASELINES` name, and ``cache`` (scenes
    splits, shared with the other notebooks)."""
    root = Path(workdir)
    return {"mle": root / "captioning_mle", "cache": root / "scenes_cache",
            **{name: root / f"captioning_tune_{name.lower()}" for name in BASELINES}}


def make_tune_eval(task: cap.CaptioningTask, split: ev.Split, num_samples: int, key: jax.Array,
                   keeper: ev.BestState | None = None):
    """``fn(model, step) -> metrics`` for :func:`rlcv_lib.core.tune.tune`: on ``split``,
    ``reward_sampled`` (mean fast CIDEr-D of ``num_samples`` samples per image, always drawn
    with ``key``), ``reward_greedy``, and ``CIDEr-D``/``BLEU-4``/``ROUGE-L``/``words`` of the
    greedy captions (pycocoevalcap, without the Java tools: no METEOR, and no PTB tokenizer,
    which leaves the already normalised scenes captions unchanged). With a ``keeper``, every
    evaluation is offered to it."""

    judge = cm.without_java(task)

    def evaluate(model, step: int = 0) -> dict[str, float]:
        samples = ev.sample(model, task, split.batch["image"], num_samples, key)
        sampled, _ = task.reward(samples, split.batch)
        judged = cm.score(judge, ev.decode(model, task, split.batch["image"]), split)
        metrics = {"reward_sampled": float(sampled.mean()),
                   "reward_greedy": judged.pop("reward"), **judged}
        if keeper is not None:
            keeper.offer(model, step, metrics)
        return metrics

    return evaluate


@dataclasses.dataclass
class Tuned:
    """One tuning run and the checkpoint chosen on validation."""

    name: str
    baseline: str
    model: Any
    """The chosen parameters (loaded after tuning)."""
    history: History
    """Train records and ``kind="eval"`` records of :func:`make_tune_eval`."""
    seconds: float
    best_step: int
    best_value: float
    """Validation greedy CIDEr-D (pycocoevalcap) of the chosen step."""


def tune_and_select(cfg: Any, model, task: cap.CaptioningTask, workdir: str | Path,
                    baseline: str, val: ev.Split, *, name: str | None = None,
                    key: jax.Array | None = None, train_size: int | None = None,
                    cache_dir: str | None = None, progress: bool = True,
                    mesh: jax.sharding.Mesh | None = None) -> Tuned:
    """REINFORCE of ``model`` (in place) with ``rl.baseline=baseline`` and ``cfg.tune`` in
    ``workdir`` (resumable), evaluated on ``val`` every ``tune.eval_every`` updates, then the
    best validation checkpoint (``captioning.select_on``) loaded into ``model``."""
    workdir = Path(workdir)
    cfg = cfg.override({"rl.baseline": baseline})
    cfg.rl.validate()
    key = jax.random.key(ev.seed_for(cfg.run.seed, "eval")) if key is None else key
    keeper = ev.BestState(cfg.captioning.select_on, workdir / "best", workdir / "history.jsonl")
    try:
        run = tuning.tune(RECIPE, cfg, model, task, workdir,
                          eval_fn=make_tune_eval(task, val, cfg.rl.num_samples, key, keeper),
                          train_size=train_size, cache_dir=cache_dir, progress=progress,
                          desc=f"captioning REINFORCE ({name or baseline})", mesh=mesh)
        best = keeper.restore(model)
    finally:
        keeper.close()
    return Tuned(name or baseline, baseline, model, run.history, run.seconds, best,
                 keeper.value)


def tune_curves(runs: Sequence[Tuned]) -> list[dict[str, Any]]:
    """Rows ``{"model", "step", "reward_sampled", "reward_greedy", "CIDEr-D"}`` of every
    validation evaluation of every run."""
    keys = ("reward_sampled", "reward_greedy", "CIDEr-D", "BLEU-4", "words")
    return [{"model": r.name, "step": e["step"], **{k: e[k] for k in keys if k in e}}
            for r in runs for e in r.history.records("eval")]


def reward_metric_correlation(runs: Sequence[Tuned], reward: str = "reward_greedy",
                              metric: str = "CIDEr-D") -> dict[str, float]:
    """Pearson r of ``reward`` and ``metric`` over each run's validation evaluations, and over
    all of them (``"all"``); NaN where fewer than 3 points or a constant series."""

    def r(pairs):
        return ev.pearson([x for x, _ in pairs], [y for _, y in pairs])

    pairs = {run.name: [(e[reward], e[metric]) for e in run.history.records("eval")]
             for run in runs}
    return {**{k: r(v) for k, v in pairs.items()}, "all": r([p for v in pairs.values()
                                                             for p in v])}


def compare_baselines(rows: Sequence[Mapping[str, Any]], runs: Sequence[Tuned],
                      metric: str = "CIDEr-D") -> str:
    """A few sentences comparing the tuned models with MLE and with each other, from the test
    rows of :func:`rlcv_lib.tasks.captioning.metrics.evaluate_models` and the runs (numbers
    only as measured)."""
    lines = []
    names = [r.name for r in runs]
    for d in dict.fromkeys(r["decoding"] for r in rows):
        pick = {r["model"]: r[metric] for r in rows if r["decoding"] == d}
        parts = [f"{n} {pick[n]:.4f} ({cm.relative_gain(rows, metric, 'MLE', n, d):+.1%})"
                 for n in names]
        best = max(names, key=lambda n: pick[n])
        others = [n for n in names if n != best]
        gap = ", ".join(f"{pick[best] / pick[n] - 1:+.1%} over {n}" if pick[n] else
                        f"more than {n}" for n in others)
        lines.append(f"Test {metric}, {d} decoding: MLE {pick['MLE']:.4f}; tuned "
                     + "; ".join(parts) + f". Best: {best} ({gap}).")
    lines.append("Tuning time: " + ", ".join(f"{r.name} {r.seconds:.0f} s (chosen step "
                                             f"{r.best_step})" for r in runs) + ".")
    return "\n".join(lines)


@dataclasses.dataclass
class CaptioningTuning:
    """What :func:`tune_and_evaluate` trained and measured."""

    pre: shipped.Pretrained
    """The MLE starting point (its curve, manifest and wrong-image control)."""
    val: ev.Split
    """The validation images of the tuning curve and the checkpoint choice."""
    runs: dict[str, Tuned]
    """One tuning per :data:`BASELINES` name, its chosen state loaded."""
    test: ev.Split
    rows: list[dict[str, Any]]
    """Test rows of every model (MLE and each run) by every decoding rule."""
    decoded: dict[tuple[str, str], cm.Decoded]
    """The test captions, by (model, decoding)."""

    @property
    def models(self) -> dict[str, Any]:
        return {"MLE": self.pre.model, **{n: r.model for n, r in self.runs.items()}}

    def summary(self) -> dict[str, Any]:
        """The JSON-able result (what ``python -m rlcv_lib tune captioning`` writes)."""
        return {"test": {f"{r['model']}, {r['decoding']}": r for r in self.rows},
                "best_step": {n: r.best_step for n, r in self.runs.items()},
                "tune_seconds": {n: r.seconds for n, r in self.runs.items()},
                "curve": tune_curves(list(self.runs.values())),
                "mle_source": self.pre.source}


def tune_and_evaluate(cfg: Any, *, workdir: str | Path, pre: shipped.Pretrained | None = None,
                      start: str | Path | None = None, cache_dir: str | None = None,
                      progress: bool = False,
                      on_eval: Callable[[dict[str, Any]], None] | None = None,
                      mesh: jax.sharding.Mesh | None = None) -> CaptioningTuning:
    """Captioning's main path, what notebook ``04_captioning`` and ``python -m rlcv_lib tune
    captioning`` run: the MLE model (``pre``, else the shipped one or ``start``; without one,
    MLE from scratch in ``workdir``), both tunings with the checkpoint chosen on validation
    (:func:`tune_and_select`, in ``workdir``), and the test rows of every model, greedy and
    beam (``captioning.beam_size``), scored by the task's judge (METEOR and the PTB tokenizer
    only with ``captioning.java_metrics`` and Java). ``on_eval`` sees every validation
    evaluation, after each tuning. ``mesh``: data-parallel tuning over its devices."""
    dirs = run_dirs(workdir)
    if pre is None:
        pre = shipped.load_or_pretrain(RECIPE, cfg, dirs["mle"], path=start,
                                       cache_dir=cache_dir, progress=progress)
    val = ev.load_split(cfg, "validation", cfg.captioning.val_size, cache_dir)
    key = jax.random.key(ev.seed_for(cfg.run.seed, "eval"))
    runs = {}
    for name, baseline in BASELINES.items():
        # tuning always runs afresh: a result never comes from an older code or config
        shutil.rmtree(dirs[name], ignore_errors=True)
        runs[name] = tune_and_select(cfg, nnx.clone(pre.model), pre.task, dirs[name], baseline,
                                     val, name=name, key=key, cache_dir=cache_dir,
                                     progress=progress, mesh=mesh)
        if on_eval is not None:
            for e in runs[name].history.records("eval"):
                on_eval({"model": name, **e})
    test = ev.load_split(cfg, "test", cfg.run.eval_examples, cache_dir)
    result = CaptioningTuning(pre, val, runs, test, [], {})
    result.rows, result.decoded = cm.evaluate_models(result.models, pre.task, test,
                                                     beam_size=cfg.captioning.beam_size)
    return result
