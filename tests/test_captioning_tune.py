"""Captioning tuning (smoke preset, tiny shapes): the tuning eval_fn, the checkpoint choice,
both baselines, the main path."""

import jax
import numpy as np
import pytest
from flax import nnx

from rlcv_lib.config import get_config
from rlcv_lib.core import evaluate as ev
from rlcv_lib.core import pretrain as mle
from rlcv_lib.core.history import History
from rlcv_lib.tasks.captioning import metrics as cm
from rlcv_lib.tasks.captioning import pretrain as cx
from rlcv_lib.tasks.captioning import tune as ct


@pytest.fixture(scope="module")
def cfg():
    return get_config("smoke", overrides={
        "train.num_steps": 6, "train.eval_every": 6, "train.log_every": 3,
        "train.ckpt_every": 6, "tune.num_steps": 4, "tune.eval_every": 2, "tune.log_every": 2,
        "tune.ckpt_every": 2, "tune.lr": 3e-3}, task="captioning")


@pytest.fixture(scope="module")
def pre(cfg, tmp_path_factory):
    return mle.pretrain(cx.RECIPE, cfg, tmp_path_factory.mktemp("mle") / "mle",
                        eval_examples=4, progress=False)


@pytest.fixture(scope="module")
def val(cfg):
    return ev.load_split(cfg, "validation", 6)


def _params(model):
    return jax.tree.leaves(jax.tree.map(np.asarray, nnx.state(model, nnx.Param)))


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(_params(a), _params(b), strict=True))


@pytest.fixture(scope="module")
def tuned(cfg, pre, val, tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    return {name: ct.tune_and_select(cfg, nnx.clone(pre.model), pre.task, root / name, baseline,
                                     val, name=name, progress=False)
            for name, baseline in ct.BASELINES.items()} | {"root": root}


def test_tune_eval_fn_outputs_agree_with_the_reward_and_the_judge(pre, val, cfg):
    key = jax.random.key(5)
    fn = ct.make_tune_eval(pre.task, val, 3, key)
    a, b = fn(pre.model, 0), fn(pre.model, 1)
    assert a == b  # the fixed key: the same samples every evaluation
    greedy = ev.decode(pre.model, pre.task, val.batch["image"])
    assert a["reward_greedy"] == pytest.approx(
        float(pre.task.reward(greedy[:, None], val.batch)[0].mean()))
    judged = pre.task.evaluate(cm.captions_of(pre.task, greedy), val.examples)
    assert {k: a[k] for k in judged} == judged
    samples = ev.sample(pre.model, pre.task, val.batch["image"], 3, key)
    assert samples.shape == (len(val), 3, pre.task.max_len)
    assert a["reward_sampled"] == pytest.approx(
        float(pre.task.reward(samples, val.batch)[0].mean()))
    assert "judge_F1" not in a  # no truth given


def test_tune_eval_fn_adds_the_grounded_judge_and_reads_the_task_reward(pre, val, cfg):
    from rlcv_lib.tasks.captioning import judge as jd

    key = jax.random.key(5)
    truths = ct.truths_of(cfg, val)
    plain = ct.make_tune_eval(pre.task, val, 3, key, truths=truths)(pre.model, 0)
    greedy = cm.captions_of(pre.task, ev.decode(pre.model, pre.task, val.batch["image"]))
    want = jd.judge_split(greedy, truths)
    assert {k: plain[f"judge_{k}"] for k in ("precision", "recall", "F1")} == pytest.approx(
        {k: want[k] for k in ("precision", "recall", "F1")}, nan_ok=True)
    # the grounded task's reward is CIDEr-D + weight x F1, what its runs maximise
    grounded = ct.make_tune_eval(pre.task.with_config(grounded_weight=2.0), val, 3, key,
                                 truths=truths)(pre.model, 0)
    f1 = np.mean([jd.caption_f1(c, t) for c, t in zip(greedy, truths, strict=True)])
    assert grounded["reward_greedy"] == pytest.approx(plain["reward_greedy"] + 2 * f1, abs=1e-5)
    assert grounded["CIDEr-D"] == plain["CIDEr-D"]  # the judge is unchanged


def test_both_baselines_run_change_the_model_and_choose_on_validation(pre, tuned, cfg):
    from rlcv_lib.core import checkpoint

    finals = {}
    for name, baseline in ct.BASELINES.items():
        run = tuned[name]
        assert run.baseline == baseline and run.name == name
        evals = run.history.records("eval")
        assert [e["step"] for e in evals] == [0, 2, 4]
        for e in evals:
            assert {"reward_sampled", "reward_greedy", "CIDEr-D", "BLEU-4", "ROUGE-L"} <= set(e)
        train = run.history.records("train")
        assert train and all(np.isfinite(r["reward_mean"]) for r in train)
        # the chosen step is the best validation CIDEr-D (ties: the earliest)
        values = [e["CIDEr-D"] for e in evals]
        assert run.best_step == evals[int(np.argmax(values))]["step"]
        assert run.best_value == max(values)
        best = nnx.clone(pre.model)
        checkpoint.restore(tuned["root"] / name / "best", best)
        assert _same(best, run.model)
        # tuning changed the parameters: the last training checkpoint is not the MLE model
        final = nnx.clone(pre.model)
        assert checkpoint.restore(tuned["root"] / name / "checkpoints", final) == 4
        assert not _same(final, pre.model)
        finals[name] = final
    assert not _same(finals["LOO"], finals["SCST"])  # different baselines, different updates
    curves = ct.tune_curves([tuned["LOO"], tuned["SCST"]])
    assert [(r["model"], r["step"]) for r in curves] == [
        ("LOO", 0), ("LOO", 2), ("LOO", 4), ("SCST", 0), ("SCST", 2), ("SCST", 4)]
    # both started from the same model: the same step-0 evaluation
    assert {k: v for k, v in curves[0].items() if k != "model"} == {
        k: v for k, v in curves[3].items() if k != "model"}


def _fake_run(name, evals, seconds=1.0, best=0):
    hist = History()
    for step, (reward, cider) in enumerate(evals):
        hist.append({"kind": "eval", "step": step, "reward_greedy": reward, "CIDEr-D": cider})
    return ct.Tuned(name, name.lower(), None, hist, seconds, best, max(c for _, c in evals))


def test_reward_metric_correlation_and_baseline_comparison():
    a = _fake_run("LOO", [(0.1, 0.2), (0.2, 0.4), (0.3, 0.6)])
    b = _fake_run("SCST", [(0.1, 0.3), (0.2, 0.1), (0.3, 0.2)])
    flat = _fake_run("X", [(0.1, 0.2), (0.1, 0.2), (0.1, 0.2)])
    r = ct.reward_metric_correlation([a, b, flat])
    assert r["LOO"] == pytest.approx(1.0) and r["SCST"] == pytest.approx(-0.5)
    assert np.isnan(r["X"])
    x = [0.1, 0.2, 0.3, 0.1, 0.2, 0.3, 0.1, 0.1, 0.1]
    y = [0.2, 0.4, 0.6, 0.3, 0.1, 0.2, 0.2, 0.2, 0.2]
    assert r["all"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    rows = [{"model": "MLE", "decoding": "greedy", "CIDEr-D": 0.5},
            {"model": "LOO", "decoding": "greedy", "CIDEr-D": 0.6},
            {"model": "SCST", "decoding": "greedy", "CIDEr-D": 0.55}]
    text = ct.compare_baselines(rows, [a, b])
    assert "MLE 0.5000; tuned LOO 0.6000 (+20.0%); SCST 0.5500 (+10.0%)" in text
    assert "Best: LOO (+9.1% over SCST)" in text


def test_run_dirs_name_the_parts_under_the_workdir(tmp_path):
    dirs = ct.run_dirs(tmp_path)
    assert set(dirs) == {"mle", "cache", *ct.BASELINES, ct.GROUNDED_RUN}
    assert all(d.parent == tmp_path for d in dirs.values())
    assert len(set(dirs.values())) == len(dirs) and not any(d.exists() for d in dirs.values())


def test_the_tuning_knobs_are_config_fields_with_one_value_per_preset():
    from rlcv_lib.config import ConfigError

    cpu = get_config("cpu", task="captioning")
    assert (cpu.captioning.val_size, cpu.captioning.beam_size,
            cpu.captioning.select_on) == (256, 4, "CIDEr-D")
    assert get_config("smoke", task="captioning").captioning.val_size == 8
    assert get_config("cpu", {"captioning.beam_size": 2}).captioning.beam_size == 2
    with pytest.raises(ConfigError, match="beam_size"):
        get_config("cpu", {"captioning.beam_size": 0})


def test_tune_and_evaluate_tunes_both_baselines_afresh_and_scores_test(cfg, pre, tmp_path):
    """The notebook's and the command line's main path, from a given MLE model: both tunings
    choose on ``captioning.val_size`` validation images; every model is decoded on test."""
    from rlcv_lib.core import shipped

    start = shipped.Pretrained(nnx.clone(pre.model), pre.task, pre.history, "shipped", None,
                               {}, cx.RECIPE)
    stale = ct.run_dirs(tmp_path)["SCST"] / "stale"
    stale.mkdir(parents=True)
    small = cfg.override({"tune.num_steps": 2, "run.eval_examples": 4,
                          "captioning.val_size": 4, "captioning.java_metrics": False})
    seen = []
    result = ct.tune_and_evaluate(small, workdir=tmp_path, pre=start, on_eval=seen.append)
    assert not stale.exists()  # tuning runs afresh
    assert len(result.val) == 4 and len(result.test) == 4
    runs = (*ct.BASELINES, ct.GROUNDED_RUN)
    assert [(e["model"], e["step"]) for e in seen] == [(m, s) for m in runs for s in (0, 2)]
    assert all("judge_F1" in e for e in seen)
    assert result.runs[ct.GROUNDED_RUN].baseline == "loo"
    assert [(r["model"], r["decoding"]) for r in result.rows] == [
        (m, d) for d in ("greedy", "beam") for m in ("MLE", ct.MLE_AS_LONG, *runs)]
    assert all("METEOR" not in r for r in result.rows)
    assert all({"precision", "recall", "F1", "count accuracy", "distinct words/1000"} <= set(r)
               for r in result.rows)
    summary = result.summary()
    assert summary["controls"][ct.MLE_AS_LONG]["steps"] >= 1
    assert not _same(result.models[ct.MLE_AS_LONG], pre.model)
    assert set(summary["best_step"]) == set(runs)
    assert all(s in (0, 2) for s in summary["best_step"].values())
    assert summary["test"]["LOO, beam"] is result.rows[7]
    assert _same(result.models["MLE"], pre.model)  # the MLE model is not tuned in place
