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
* **A grounded comparison run and a control.** ``LOO, grounded`` (:data:`GROUNDED_RUN`) is
  the leave-one-out tuning with the reward CIDEr-D + ``captioning.grounded_run_weight`` × the
  grounded judge's object F1 (:mod:`rlcv_lib.tasks.captioning.judge`); ``MLE as long``
  (:data:`MLE_AS_LONG`) is the MLE model trained on by MLE for the seconds of updates the
  leave-one-out tuning took.
* **Curve during tuning** (:func:`make_tune_eval`): on ``captioning.val_size`` fixed validation
  images, the reward (training-set document frequencies) of ``rl.num_samples`` samples per
  image drawn with a fixed key (``reward_sampled``: what REINFORCE maximises), of the greedy
  caption (``reward_greedy``), pycocoevalcap's CIDEr-D/BLEU-4/ROUGE-L of the greedy captions,
  and the grounded judge's precision, recall and F1 of them.
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
from rlcv_lib.tasks.captioning import judge as judge_lib
from rlcv_lib.tasks.captioning import metrics as cm
from rlcv_lib.tasks.captioning import task as cap
from rlcv_lib.tasks.captioning.pretrain import RECIPE

BASELINES = {"LOO": "loo", "SCST": "greedy"}
"""Display name -> ``rl.baseline`` of the two tunings compared."""


def run_dirs(workdir: str | Path) -> dict[str, Path]:
    """Where the parts of :func:`tune_and_evaluate` live under ``workdir``: ``mle`` (MLE from
    scratch, resumable), one tuning dir per run name (:data:`BASELINES` and
    :data:`GROUNDED_RUN`), and ``cache`` (scenes splits, shared with the other notebooks)."""
    root = Path(workdir)
    return {"mle": root / "captioning_mle", "cache": root / "scenes_cache",
            **{name: root / f"captioning_tune_{name.lower().replace(', ', '_')}"
               for name in (*BASELINES, GROUNDED_RUN)}}


def make_tune_eval(task: cap.CaptioningTask, split: ev.Split, num_samples: int, key: jax.Array,
                   keeper: ev.BestState | None = None,
                   truths: Sequence[Sequence[Any]] | None = None):
    """``fn(model, step) -> metrics`` for :func:`rlcv_lib.core.tune.tune`: on ``split``,
    ``reward_sampled`` (mean reward of ``num_samples`` samples per image, always drawn with
    ``key``: what REINFORCE maximises), ``reward_greedy``, and ``CIDEr-D``/``BLEU-4``/
    ``ROUGE-L``/``words`` of the greedy captions (pycocoevalcap, without the Java tools: no
    METEOR, and no PTB tokenizer, which leaves the already normalised scenes captions
    unchanged); with the scenes' ``truths`` (one per image of ``split``), the grounded judge's
    ``judge_precision``/``judge_recall``/``judge_F1`` (percent) of the greedy captions. With a
    ``keeper``, every evaluation is offered to it."""

    scorer = cm.without_java(task)

    def evaluate(model, step: int = 0) -> dict[str, float]:
        samples = ev.sample(model, task, split.batch["image"], num_samples, key)
        sampled, _ = task.reward(samples, split.batch)
        greedy = ev.decode(model, task, split.batch["image"])
        judged = cm.score(scorer, greedy, split)
        metrics = {"reward_sampled": float(sampled.mean()),
                   "reward_greedy": judged.pop("reward"), **judged}
        if truths is not None:
            grounded = judge_lib.judge_split(cm.captions_of(task, greedy), truths)
            metrics |= {f"judge_{k}": grounded[k] for k in ("precision", "recall", "F1")}
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


def has_truth(world: Any) -> bool:
    """Whether ``world`` is the scenes world, whose images' truth the grounded judge reads."""
    from rlcv_lib.data import scenes

    return isinstance(world, scenes.WorldConfig)


def truths_of(cfg: Any, split: ev.Split) -> list[list[Any]] | None:
    """The grounded judge's truth of every image of ``split`` (None off the scenes world)."""
    return judge_lib.split_truth(cfg.world, split.examples) if has_truth(cfg.world) else None


def tune_and_select(cfg: Any, model, task: cap.CaptioningTask, workdir: str | Path,
                    baseline: str, val: ev.Split, *, name: str | None = None,
                    key: jax.Array | None = None, train_size: int | None = None,
                    cache_dir: str | None = None, progress: bool = True,
                    mesh: jax.sharding.Mesh | None = None,
                    val_truths: Sequence[Sequence[Any]] | None = None) -> Tuned:
    """REINFORCE of ``model`` (in place) with ``rl.baseline=baseline`` and ``cfg.tune`` in
    ``workdir`` (resumable), evaluated on ``val`` every ``tune.eval_every`` updates (with the
    grounded judge where ``val_truths`` are given), then the best validation checkpoint
    (``captioning.select_on``) loaded into ``model``. The reward is ``task``'s (its
    ``cfg.grounded_weight``)."""
    workdir = Path(workdir)
    cfg = cfg.override({"rl.baseline": baseline})
    cfg.rl.validate()
    key = jax.random.key(ev.seed_for(cfg.run.seed, "eval")) if key is None else key
    keeper = ev.BestState(cfg.captioning.select_on, workdir / "best", workdir / "history.jsonl")
    try:
        run = tuning.tune(RECIPE, cfg, model, task, workdir,
                          eval_fn=make_tune_eval(task, val, cfg.rl.num_samples, key, keeper,
                                                 val_truths),
                          train_size=train_size, cache_dir=cache_dir, progress=progress,
                          desc=f"captioning REINFORCE ({name or baseline})", mesh=mesh)
        best = keeper.restore(model)
    finally:
        keeper.close()
    return Tuned(name or baseline, baseline, model, run.history, run.seconds, best,
                 keeper.value)


def tune_curves(runs: Sequence[Tuned]) -> list[dict[str, Any]]:
    """Rows ``{"model", "step", "reward_sampled", "reward_greedy", "CIDEr-D", ...,
    "judge_F1"}`` of every validation evaluation of every run."""
    keys = ("reward_sampled", "reward_greedy", "CIDEr-D", "BLEU-4", "words", "judge_precision",
            "judge_recall", "judge_F1")
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


GROUNDED_RUN = "LOO, grounded"
"""The name of the comparison run whose reward adds the grounded judge's F1."""
MLE_AS_LONG = "MLE as long"
"""The name of the control trained on by MLE for as long as the leave-one-out tuning."""


@dataclasses.dataclass
class CaptioningTuning:
    """What :func:`tune_and_evaluate` trained and measured."""

    pre: shipped.Pretrained
    """The MLE starting point (its curve, manifest and wrong-image control)."""
    val: ev.Split
    """The validation images of the tuning curve and the checkpoint choice."""
    runs: dict[str, Tuned]
    """One tuning per :data:`BASELINES` name (and :data:`GROUNDED_RUN`), its chosen state
    loaded."""
    test: ev.Split
    rows: list[dict[str, Any]]
    """Test rows of every model (MLE, the control, each run) by every decoding rule."""
    decoded: dict[tuple[str, str], cm.Decoded]
    """The test captions, by (model, decoding)."""
    controls: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Control models by name (:data:`MLE_AS_LONG`)."""
    control_info: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    """Per control: ``{steps, seconds}`` of its extra MLE."""
    test_truths: list[list[Any]] | None = None
    """The grounded judge's truth of every test image (None off the scenes world)."""

    @property
    def models(self) -> dict[str, Any]:
        return {"MLE": self.pre.model, **self.controls,
                **{n: r.model for n, r in self.runs.items()}}

    def summary(self) -> dict[str, Any]:
        """The JSON-able result (what ``python -m rlcv_lib tune captioning`` writes)."""
        return {"test": {f"{r['model']}, {r['decoding']}": r for r in self.rows},
                "best_step": {n: r.best_step for n, r in self.runs.items()},
                "tune_seconds": {n: r.seconds for n, r in self.runs.items()},
                "controls": self.control_info,
                "curve": tune_curves(list(self.runs.values())),
                "mle_source": self.pre.source, "mle_encoder": self.pre.encoder_start}


def tune_and_evaluate(cfg: Any, *, workdir: str | Path, pre: shipped.Pretrained | None = None,
                      start: str | Path | None = None, cache_dir: str | None = None,
                      progress: bool = False,
                      on_eval: Callable[[dict[str, Any]], None] | None = None,
                      mesh: jax.sharding.Mesh | None = None) -> CaptioningTuning:
    """Captioning's main path, what notebook ``04_captioning`` and ``python -m rlcv_lib tune
    captioning`` run: the MLE model (``pre``, else the shipped one or ``start``; without one,
    MLE from scratch in ``workdir``); both tunings, and on the scenes world with
    ``captioning.grounded_run_weight`` > 0 the leave-one-out run with the grounded reward
    (:data:`GROUNDED_RUN`), each with the checkpoint chosen on validation
    (:func:`tune_and_select`, in ``workdir``); with ``captioning.mle_as_long`` the control
    :data:`MLE_AS_LONG`; and the test rows of every model, greedy and beam
    (``captioning.beam_size``), scored by the task's judge (METEOR and the PTB tokenizer only
    with ``captioning.java_metrics`` and Java) and, on the scenes world, by the grounded judge.
    ``on_eval`` sees every validation evaluation, after each tuning. ``mesh``: data-parallel
    tuning over its devices."""
    dirs = run_dirs(workdir)
    if pre is None:
        pre = shipped.load_or_pretrain(RECIPE, cfg, dirs["mle"], path=start,
                                       cache_dir=cache_dir, progress=progress)
    val = ev.load_split(cfg, "validation", cfg.captioning.val_size, cache_dir)
    val_truths = truths_of(cfg, val)
    key = jax.random.key(ev.seed_for(cfg.run.seed, "eval"))
    plan = [(name, baseline, pre.task) for name, baseline in BASELINES.items()]
    weight = cfg.captioning.grounded_run_weight
    if weight > 0 and has_truth(cfg.world):
        plan.append((GROUNDED_RUN, "loo", pre.task.with_config(grounded_weight=weight)))
    runs = {}
    for name, baseline, task in plan:
        # tuning always runs afresh: a result never comes from an older code or config
        shutil.rmtree(dirs[name], ignore_errors=True)
        runs[name] = tune_and_select(cfg, nnx.clone(pre.model), task, dirs[name], baseline,
                                     val, name=name, key=key, cache_dir=cache_dir,
                                     progress=progress, mesh=mesh, val_truths=val_truths)
        if on_eval is not None:
            for e in runs[name].history.records("eval"):
                on_eval({"model": name, **e})
    controls, info = {}, {}
    if cfg.captioning.mle_as_long:
        seconds = ev.update_seconds(runs["LOO"].history)  # updates only, as tuning's
        controls[MLE_AS_LONG], info[MLE_AS_LONG] = ev.continue_mle(
            RECIPE, cfg, pre.model, pre.task, seconds, cache_dir=cache_dir)
    test = ev.load_split(cfg, "test", cfg.run.eval_examples, cache_dir)
    result = CaptioningTuning(pre, val, runs, test, [], {}, controls, info,
                              truths_of(cfg, test))
    result.rows, result.decoded = cm.evaluate_models(result.models, pre.task, test,
                                                     beam_size=cfg.captioning.beam_size,
                                                     truths=result.test_truths)
    return result
