"""Captioning reward tuning and its evaluation (issue 6): what notebook ``04_captioning`` calls.

The experiment, on the scenes world::

    pre = pretrained.load_or_pretrain(captioning_experiment.RECIPE, cfg, workdir / "mle")
    val, test = load_split(cfg, "validation", n), load_split(cfg, "test", n)
    loo = tune_and_select(cfg, nnx.clone(pre.model), pre.task, workdir / "loo", "loo", val_tune)
    scst = tune_and_select(cfg, nnx.clone(pre.model), pre.task, workdir / "scst", "greedy", ...)
    rows, captions = evaluate_models({"MLE": pre.model, "LOO": loo.model, ...}, task, test)

* **Two baselines, one model.** Both tunings start from copies of the same MLE model, see the
  same batches (``tuning.tune``'s data order depends on the seed only) and draw the same number
  of samples per image (``rl.num_samples``); only the baseline of each sample's advantage
  differs: the mean reward of the image's other N − 1 samples (leave-one-out, the paper's) or
  the reward of the image's greedy caption (self-critical sequence training, Rennie et al.
  2017, with N samples per image as in its later implementations).
* **Curve during tuning** (:func:`make_tune_eval`): on a fixed set of validation images, the
  fast CIDEr-D reward (training-set document frequencies) of ``rl.num_samples`` samples per
  image drawn with a fixed key (``reward_sampled``: what REINFORCE maximises), of the greedy
  caption (``reward_greedy``), and pycocoevalcap's CIDEr-D/BLEU-4/ROUGE-L of the greedy
  captions (the judge).
* **Checkpoint choice** (:class:`BestCheckpoint`): the evaluation (step 0 = the MLE model
  included) with the highest validation greedy CIDEr-D (pycocoevalcap) is kept (its parameters
  saved in ``workdir/best``); :func:`tune_and_select` loads it into the model after tuning. So
  a tuning that never beats MLE on validation returns the MLE model itself (``best_step == 0``).
  The test split is never looked at while choosing.
* **Judge** (:func:`evaluate_models`): every model decoded by the same rules (greedy, and beam
  search of width ``beam_size`` with summed log-probabilities) on the same split and scored by
  ``task.evaluate`` (pycocoevalcap CIDEr-D, BLEU-4, ROUGE-L; METEOR and the PTB tokenizer only
  with Java; never SPICE).
* **Reward distribution** (:func:`reward_distribution`, the paper's before/after table): per
  model, the fast CIDEr-D of the greedy caption of each of ``run.eval_examples`` validation
  images, and of ``rl.num_samples`` samples per image (temperature 1, no truncation, fixed
  key): mean, std and the :data:`PERCENTILES`.
* **Ceiling** (:func:`reference_ceiling`): each reference scored by pycocoevalcap's CIDEr-D
  against the other four of its image (df from those four-reference sets), averaged over the
  five choices: what a captioner that writes like one more annotator would get. Not an upper
  bound: a model that writes the references' consensus wording scores above it (measured on
  the cpu world: ``notes/captioning_tuning.md``). :func:`leave_one_out_cider` scores a model's
  captions under exactly the same conditions (four references, the same five df tables), so
  the two numbers compare directly (the ordinary five-reference CIDEr-D is not comparable:
  more references, other df).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import textwrap
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rlcv_lib import checkpoint, mle_experiment, steps, tuning
from rlcv_lib.captioning_experiment import RECIPE, WORD_CLASSES, wrong_image_control
from rlcv_lib.data import stats as stats_lib
from rlcv_lib.history import History
from rlcv_lib.reinforce import RLConfig
from rlcv_lib.tasks import captioning as cap

PERCENTILES = (10, 25, 50, 75, 90)
"""Percentiles of the reward-distribution table (NumPy's default linear interpolation)."""
BASELINES = {"LOO": "loo", "SCST": "greedy"}
"""Display name -> ``rl.baseline`` of the two tunings compared."""
SELECT_ON = "CIDEr-D"
"""The validation metric (greedy decoding, pycocoevalcap) that chooses the tuned checkpoint."""


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """Sizes of the captioning tuning notebook's evaluations (per preset: :data:`EVAL_PRESETS`;
    the number of test and reward-distribution examples is ``run.eval_examples``)."""

    tune_examples: int = 256
    """Validation images scored at every tuning evaluation (curve and checkpoint choice)."""
    beam_size: int = 4
    """Beam width of the beam-search rows of the results table."""
    shown: int = 6
    """Test images shown with their captions before and after tuning."""


EVAL_PRESETS: dict[str, EvalSettings] = {
    "smoke": EvalSettings(tune_examples=8, beam_size=2, shown=3),
    "cpu": EvalSettings(tune_examples=256),
    "gpu": EvalSettings(tune_examples=1024),
    "paper": EvalSettings(tune_examples=5000),
}


TUNE_DEFAULTS: dict[str, dict[str, Any]] = {}
"""Captioning's values of the shared tuning sections (``tune``/``rl``), per preset, where they
differ from the presets (which detection shares); a notebook override of the same dotted key
wins (see :func:`experiment_config`)."""


def experiment_config(cfg: Any, overrides: Mapping[str, Any] | None = None) -> Any:
    """``cfg`` with :data:`TUNE_DEFAULTS` of its preset applied, except the keys the user
    overrode (``overrides``, dotted names as given to the notebook)."""
    return tuning.with_task_defaults(cfg, TUNE_DEFAULTS, overrides)


def run_dirs(workdir: str | Path) -> dict[str, Path]:
    """Where the notebook's parts live under ``workdir``: ``mle`` (MLE from scratch, resumable),
    one tuning dir per :data:`BASELINES` name (emptied here: tuning always runs afresh, so a
    result never comes from an older code or config), and ``cache`` (scenes splits, shared with
    the other notebooks)."""
    root = Path(workdir)
    dirs = {"mle": root / "captioning_mle", "cache": root / "scenes_cache"}
    for name in BASELINES:
        dirs[name] = root / f"captioning_tune_{name.lower()}"
        shutil.rmtree(dirs[name], ignore_errors=True)
    return dirs


# ------------------------------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True)
class Split:
    """The first scenes of a split, as examples (for the judge) and one collated batch."""

    name: str
    examples: list[dict[str, Any]]
    batch: dict[str, np.ndarray]
    """``image`` float32 [B,H,W,3], ``captions`` [B,M] str, ..."""

    def __len__(self) -> int:
        return len(self.examples)

    def head(self, n: int) -> Split:
        """The first ``n`` examples (a view of the same scenes)."""
        return Split(self.name, self.examples[:n], {k: v[:n] for k, v in self.batch.items()})


def load_split(cfg: Any, split: str, num_examples: int, cache_dir: str | None = None) -> Split:
    """The first ``min(num_examples, split size)`` scenes of ``split`` (validation or test)."""
    return Split(split, *mle_experiment.split_set(cfg, split, num_examples, cache_dir))


# --------------------------------------------------------------------------------- decoding


def decode(model, task: cap.CaptioningTask, images: np.ndarray, method: str = "greedy",
           beam_size: int = 4, chunk: int = 256) -> np.ndarray:
    """int32 [B,L]: the caption tokens of ``images`` [B,H,W,3] by ``method`` ("greedy" or
    "beam": the best of ``beam_size`` beams by summed log-probability)."""
    fn = steps.make_eval_fn(task, method, beam_size)
    return np.concatenate([np.asarray(fn(model, {"image": jnp.asarray(images[lo:lo + chunk])}))
                           for lo in range(0, len(images), chunk)])


def sample(model, task: cap.CaptioningTask, images: np.ndarray, num_samples: int,
           key: jax.Array, chunk: int = 128) -> np.ndarray:
    """int32 [B,N,L]: ``num_samples`` captions per image by the RL protocol (temperature 1, no
    truncation); chunk ``c`` of the images draws with ``fold_in(key, c)``, so the result is a
    pure function of (model, images, key, chunk)."""
    fn = steps.make_sample_fn(task, RLConfig(num_samples=num_samples, baseline="none"))
    return np.concatenate([
        np.asarray(fn(model, jnp.asarray(images[lo:lo + chunk]),
                      jax.random.fold_in(key, c)).tokens)
        for c, lo in enumerate(range(0, len(images), chunk))])


def captions_of(task: cap.CaptioningTask, tokens: np.ndarray) -> list[str]:
    """The decoded captions of ``tokens`` [B,L]."""
    return [task.detokenize(t) for t in tokens]


# ------------------------------------------------------------------------------------ judge


def score(task: cap.CaptioningTask, tokens: np.ndarray, split: Split) -> dict[str, float]:
    """pycocoevalcap's metrics (``task.evaluate``) of ``tokens`` [B,L] on ``split``, plus the
    fast reward's mean (``reward``) and the mean caption length in words (``words``)."""
    return score_detailed(task, tokens, split)[0]


def score_detailed(task: cap.CaptioningTask, tokens: np.ndarray, split: Split
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


def evaluate_models(models: Mapping[str, Any], task: cap.CaptioningTask, split: Split,
                    methods: Sequence[str] = ("greedy", "beam"), beam_size: int = 4
                    ) -> tuple[list[dict[str, Any]], dict[tuple[str, str], Decoded]]:
    """Every model decoded by every method on the same images and scored the same way.

    Returns the table rows ``{"model", "decoding", "CIDEr-D", "BLEU-4", "ROUGE-L", ...,
    "reward", "words"}`` and the captions ``{(model, method): Decoded}``."""
    rows, decoded = [], {}
    for method in methods:
        for name, model in models.items():
            tokens = decode(model, task, split.batch["image"], method, beam_size)
            metrics, reward = score_detailed(task, tokens, split)
            decoded[name, method] = Decoded(captions_of(task, tokens), reward)
            rows.append({"model": name, "decoding": method, **metrics})
    return rows, decoded


def relative_gain(rows: Sequence[Mapping[str, Any]], metric: str, base: str, other: str,
                  decoding: str) -> float:
    """``other / base - 1`` of ``metric`` between two models' rows with the same decoding."""
    pick = {r["model"]: r[metric] for r in rows if r["decoding"] == decoding}
    if base not in pick or other not in pick:
        raise KeyError(f"no {decoding!r} rows for {base!r} and {other!r}; have {sorted(pick)}")
    return float(pick[other] / pick[base] - 1.0) if pick[base] else float("inf")


# ------------------------------------------------------------------------ reward distribution


def summarize(values: np.ndarray) -> dict[str, float]:
    """``{n, mean, std, p10, p25, p50, p75, p90}`` of ``values`` (any shape, flattened; std is
    the population std, percentiles NumPy's linear interpolation)."""
    v = np.asarray(values, np.float64).reshape(-1)
    if not len(v):
        raise ValueError("summarize needs at least one value")
    qs = np.percentile(v, PERCENTILES)
    return {"n": len(v), "mean": float(v.mean()), "std": float(v.std()),
            **{f"p{p}": float(q) for p, q in zip(PERCENTILES, qs, strict=True)}}


def reward_distribution(model, task: cap.CaptioningTask, split: Split, num_samples: int,
                        key: jax.Array) -> dict[str, dict[str, float]]:
    """``{"greedy": summarize([B]), "sampled": summarize([B·N])}`` of the fast CIDEr-D of the
    greedy caption and of ``num_samples`` samples of every image of ``split``."""
    greedy = decode(model, task, split.batch["image"])[:, None]  # [B,1,L]
    samples = sample(model, task, split.batch["image"], num_samples, key)  # [B,N,L]
    return {"greedy": summarize(task.reward(greedy, split.batch)[0]),
            "sampled": summarize(task.reward(samples, split.batch)[0])}


def distribution_rows(dists: Mapping[str, Mapping[str, Mapping[str, float]]]
                      ) -> list[dict[str, Any]]:
    """Table rows ``{"model", "decoding", "n", "mean", "std", "p10", ...}`` of
    ``{model: reward_distribution(...)}``, greedy rows first."""
    return [{"model": name, "decoding": method, **dist[method]}
            for method in ("greedy", "sampled") for name, dist in dists.items()]


# -------------------------------------------------------------------------------- tuning


def make_tune_eval(task: cap.CaptioningTask, split: Split, num_samples: int, key: jax.Array,
                   keeper: BestCheckpoint | None = None):
    """``fn(model, step) -> metrics`` for :func:`rlcv_lib.tuning.tune`: on ``split``,
    ``reward_sampled`` (mean fast CIDEr-D of ``num_samples`` samples per image, always drawn
    with ``key``), ``reward_greedy``, and ``CIDEr-D``/``BLEU-4``/``ROUGE-L``/``words`` of the
    greedy captions (pycocoevalcap, without the Java tools: no METEOR, and no PTB tokenizer,
    which leaves the already normalised scenes captions unchanged). With a ``keeper``, every
    evaluation is offered to it."""

    judge = without_java(task)

    def evaluate(model, step: int = 0) -> dict[str, float]:
        samples = sample(model, task, split.batch["image"], num_samples, key)
        sampled, _ = task.reward(samples, split.batch)
        judged = score(judge, decode(model, task, split.batch["image"]), split)
        metrics = {"reward_sampled": float(sampled.mean()),
                   "reward_greedy": judged.pop("reward"), **judged}
        if keeper is not None:
            keeper.offer(model, step, metrics)
        return metrics

    return evaluate


def without_java(task: cap.CaptioningTask) -> cap.CaptioningTask:
    """A shallow copy of ``task`` whose ``evaluate`` skips the Java tools (PTB tokenizer and
    METEOR: about 14 s per call on the 2-core CPU, against 0.3 s for the rest)."""
    out = copy.copy(task)
    out.cfg = dataclasses.replace(task.cfg, java_metrics=False)
    return out


class BestCheckpoint:
    """Keeps the parameters of the evaluation with the highest ``metric`` in ``directory``
    (one Orbax checkpoint, synchronous). Ties keep the earlier step. A run resumed in the
    same workdir recovers the best so far from the checkpoint and ``history``."""

    def __init__(self, directory: str | Path, metric: str = SELECT_ON,
                 history: str | Path | None = None):
        self.metric = metric
        self.ckpt = checkpoint.Checkpointer(directory, max_to_keep=1, async_save=False)
        self.step: int | None = self.ckpt.latest_step()
        self.value = -np.inf
        if self.step is not None and history is not None:
            evals = [r for r in History(history).records("eval") if r["step"] == self.step]
            self.value = evals[-1][metric] if evals else -np.inf

    def offer(self, model, step: int, metrics: Mapping[str, float]) -> bool:
        """Saves ``model`` if ``metrics[metric]`` beats the best so far; returns whether."""
        if self.metric not in metrics:
            raise KeyError(f"metric {self.metric!r} not in the evaluation {sorted(metrics)}")
        value = float(metrics[self.metric])
        if not value > self.value:
            return False
        self.ckpt.save(step, model)  # steps only grow: max_to_keep=1 drops the older best
        self.ckpt.wait()
        self.step, self.value = step, value
        return True

    def restore(self, model) -> int:
        """Loads the best parameters into ``model``; returns their step."""
        if self.step is None:
            raise FileNotFoundError(f"no evaluation was offered to {self.ckpt.directory}")
        return self.ckpt.restore(model, step=self.step)

    def close(self) -> None:
        self.ckpt.close()


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


def with_baseline(cfg: Any, baseline: str) -> Any:
    """``cfg`` with ``rl.baseline`` replaced (every other setting, overrides included, kept)."""
    rl = dataclasses.replace(cfg.rl, baseline=baseline)
    rl.validate()
    return dataclasses.replace(cfg, sections=types.MappingProxyType({**cfg.sections, "rl": rl}))


def tune_and_select(cfg: Any, model, task: cap.CaptioningTask, workdir: str | Path,
                    baseline: str, val: Split, *, name: str | None = None,
                    key: jax.Array | None = None, train_size: int | None = None,
                    cache_dir: str | None = None, progress: bool = True) -> Tuned:
    """REINFORCE of ``model`` (in place) with ``rl.baseline=baseline`` and ``cfg.tune`` in
    ``workdir`` (resumable), evaluated on ``val`` every ``tune.eval_every`` updates, then the
    best validation checkpoint loaded into ``model``."""
    workdir = Path(workdir)
    cfg = with_baseline(cfg, baseline)
    key = jax.random.key(cfg.run.seed + 7) if key is None else key
    keeper = BestCheckpoint(workdir / "best", SELECT_ON, workdir / "history.jsonl")
    try:
        run = tuning.tune(RECIPE, cfg, model, task, workdir,
                          eval_fn=make_tune_eval(task, val, cfg.rl.num_samples, key, keeper),
                          train_size=train_size, cache_dir=cache_dir, progress=progress,
                          desc=f"captioning REINFORCE ({name or baseline})")
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
        x, y = np.array(pairs, np.float64).reshape(-1, 2).T
        if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
            return float("nan")
        return float(np.corrcoef(x, y)[0, 1])

    pairs = {run.name: [(e[reward], e[metric]) for e in run.history.records("eval")]
             for run in runs}
    return {**{k: r(v) for k, v in pairs.items()}, "all": r([p for v in pairs.values()
                                                             for p in v])}


def compare_baselines(rows: Sequence[Mapping[str, Any]], runs: Sequence[Tuned],
                      metric: str = "CIDEr-D") -> str:
    """A few sentences comparing the tuned models with MLE and with each other, from the test
    rows of :func:`evaluate_models` and the runs (numbers only as measured)."""
    lines = []
    names = [r.name for r in runs]
    for d in dict.fromkeys(r["decoding"] for r in rows):
        pick = {r["model"]: r[metric] for r in rows if r["decoding"] == d}
        parts = [f"{n} {pick[n]:.4f} ({relative_gain(rows, metric, 'MLE', n, d):+.1%})"
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


# ------------------------------------------------------------------------------ MLE checks


def control_rows(control: Mapping[str, Mapping[str, float]]) -> list[dict[str, Any]]:
    """Rows ``{"word class", "true image", "wrong image", "gap"}`` of a wrong-image control, in
    the order of :data:`~rlcv_lib.captioning_experiment.WORD_CLASSES` (a shipped manifest
    stores them sorted), then any other class."""
    order = [k for k in WORD_CLASSES if k in control["true"]]
    order += [k for k in control["true"] if k not in order]
    return [{"word class": k, "true image": control["true"][k],
             "wrong image": control["wrong"][k], "gap": control["gap"][k]} for k in order]


def mle_control(pre: Any, val: Split) -> tuple[dict[str, dict[str, float]], str]:
    """The wrong-image control of a pretrained model (:class:`~rlcv_lib.pretrained.Pretrained`)
    and where it comes from: the shipped manifest's, else measured now on ``val``."""
    control = pre.manifest.get("wrong_image_control")
    if control:
        return control, "shipped manifest"
    return wrong_image_control(pre.model, pre.task, val.batch), f"measured on {len(val)} images"


# -------------------------------------------------------------------------------- ceiling


def reference_ceiling(split: Split) -> tuple[float, np.ndarray]:
    """(mean, per-(image, reference) [B,M]) CIDEr-D of each reference against the other
    references of its image (pycocoevalcap; :func:`rlcv_lib.data.stats.reference_cider`)."""
    return stats_lib.reference_cider([[str(c) for c in ex["captions"]]
                                      for ex in split.examples])


def leave_one_out_cider(predictions: Sequence[str], split: Split) -> float:
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


# ------------------------------------------------------------------------------- examples


def example_rows(split: Split, decoded: Mapping[str, Decoded], indices: Sequence[int]
                 ) -> list[dict[str, Any]]:
    """One row per shown image: its first reference, then each model's caption and that
    caption's fast CIDEr-D against the image's references."""
    rows = []
    for i in indices:
        row: dict[str, Any] = {"image": int(i), "reference": str(split.examples[i]["captions"][0])}
        for name, d in decoded.items():
            row[name] = d.captions[i]
            row[f"{name} CIDEr-D"] = float(d.reward[i])
        rows.append(row)
    return rows


def draw_examples(split: Split, decoded: Mapping[str, Decoded], indices: Sequence[int],
                  width: int = 34):
    """A figure: each shown image above its first reference and each model's caption."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(indices), figsize=(2.9 * len(indices), 4.6), squeeze=False)
    for ax, i in zip(axes[0], indices, strict=True):
        ax.imshow(split.examples[i]["image"])
        ax.axis("off")
        lines = [f"ref: {split.examples[i]['captions'][0]}"]
        lines += [f"{name}: {d.captions[i]}" for name, d in decoded.items()]
        ax.set_title("\n".join(textwrap.fill(t, width) for t in lines), fontsize=6.5,
                     loc="left")
    fig.tight_layout()
    return fig


def dumps(obj: Any) -> str:
    """Compact JSON of a result (for printing in the notebook)."""
    return json.dumps(obj, indent=1, default=float)


def clone(model):
    """An independent copy of ``model`` (each tuning starts from its own)."""
    return nnx.clone(model)


# ---------------------------------------------------------------------------- seed spread


def seed_rows(cfg: Any, workdir: str | Path, *, cache_dir: str | None = None,
              progress: bool = False) -> list[dict[str, Any]]:
    """The notebook's tuning protocol for ``cfg.run.seed`` (outside CI, for the seed spread):
    the MLE model (shipped: the same for every seed; else trained in ``workdir``), both
    tunings with the checkpoint chosen on validation, and the test rows of every model, greedy
    and beam, scored without the Java tools (CIDEr-D, BLEU-4 and ROUGE-L as in the notebook,
    no METEOR). Each row also carries ``seed``, ``best_step`` and ``tune_seconds``."""
    from rlcv_lib import pretrained

    settings = EVAL_PRESETS[cfg.preset]
    dirs = run_dirs(workdir)
    pre = pretrained.load_or_pretrain(RECIPE, cfg, dirs["mle"], cache_dir=cache_dir,
                                      progress=progress)
    val = load_split(cfg, "validation", settings.tune_examples, cache_dir)
    key = jax.random.key(cfg.run.seed + 7)
    runs = {name: tune_and_select(cfg, clone(pre.model), pre.task, dirs[name], baseline, val,
                                  name=name, key=key, cache_dir=cache_dir, progress=progress)
            for name, baseline in BASELINES.items()}
    test = load_split(cfg, "test", cfg.run.eval_examples, cache_dir)
    models = {"MLE": pre.model, **{n: r.model for n, r in runs.items()}}
    rows, _ = evaluate_models(models, without_java(pre.task), test, beam_size=settings.beam_size)
    for r in rows:
        run = runs.get(r["model"])
        r.update(seed=cfg.run.seed, mle_source=pre.source,
                 best_step=None if run is None else run.best_step,
                 tune_seconds=None if run is None else round(run.seconds, 1))
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m rlcv_lib.captioning_tuning PRESET WORKDIR SEED [SEED ...] [key=value ...]``:
    :func:`seed_rows` for each seed (in ``WORKDIR/seed<N>``, scenes cached in
    ``WORKDIR/scenes_cache``), one JSON line per test row."""
    import sys

    from rlcv_lib.config import get_config

    args = list(sys.argv[1:] if argv is None else argv)
    kv = [a for a in args if "=" in a]
    pos = [a for a in args if "=" not in a]
    if len(pos) < 3:
        raise SystemExit("usage: python -m rlcv_lib.captioning_tuning PRESET WORKDIR SEED "
                         "[SEED ...] [section.field=value ...]")
    preset, workdir, *seeds = pos
    overrides = dict(a.split("=", 1) for a in kv)
    root = Path(workdir)
    for seed in seeds:
        cfg = experiment_config(get_config(preset, {**overrides, "run.seed": int(seed)}),
                                overrides)
        for row in seed_rows(cfg, root / f"seed{seed}", cache_dir=str(root / "scenes_cache")):
            print(json.dumps(row, default=float), flush=True)


if __name__ == "__main__":
    main()
