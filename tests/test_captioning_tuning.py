"""Captioning tuning and evaluation (smoke preset, tiny shapes): tables, the tuning eval_fn,
checkpoint choice, both baselines, the judge, and the references' ceiling against
pycocoevalcap."""

import jax
import numpy as np
import pytest
from flax import nnx

from rlcv_lib.config import get_config
from rlcv_lib.core.history import History
from rlcv_lib.tasks.captioning import pretrain as cx
from rlcv_lib.tasks.captioning import task as cap
from rlcv_lib.tasks.captioning import tune as ct


@pytest.fixture(scope="module")
def cfg():
    return get_config("smoke", overrides={
        "train.num_steps": 6, "train.eval_every": 6, "train.log_every": 3,
        "train.ckpt_every": 6, "tune.num_steps": 4, "tune.eval_every": 2, "tune.log_every": 2,
        "tune.ckpt_every": 2, "tune.lr": 3e-3})


@pytest.fixture(scope="module")
def pre(cfg, tmp_path_factory):
    return cx.pretrain(cfg, tmp_path_factory.mktemp("mle") / "mle", eval_examples=4,
                       progress=False)


@pytest.fixture(scope="module")
def val(cfg):
    return ct.load_split(cfg, "validation", 6)


@pytest.fixture(scope="module")
def tuned(cfg, pre, val, tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    return {name: ct.tune_and_select(cfg, ct.clone(pre.model), pre.task, root / name, baseline,
                                     val, name=name, progress=False)
            for name, baseline in ct.BASELINES.items()} | {"root": root}


def _params(model):
    return jax.tree.leaves(jax.tree.map(np.asarray, nnx.state(model, nnx.Param)))


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(_params(a), _params(b), strict=True))


# ------------------------------------------------------------------------- pure functions


def test_summarize_percentiles_exact_on_a_hand_built_case():
    got = ct.summarize(np.array([[4.0, 1.0], [3.0, 2.0]]))
    assert list(got) == ["n", "mean", "std", "p10", "p25", "p50", "p75", "p90"]
    # sorted 1,2,3,4: the q-th percentile sits at position 3q/100 (linear interpolation)
    want = {"n": 4, "mean": 2.5, "std": np.sqrt(1.25), "p10": 1.3, "p25": 1.75, "p50": 2.5,
            "p75": 3.25, "p90": 3.7}
    assert got == pytest.approx(want, abs=1e-12)
    assert ct.summarize(np.arange(101.0))["p90"] == 90.0
    with pytest.raises(ValueError, match="at least one"):
        ct.summarize(np.array([]))


def test_distribution_rows_hold_every_model_and_decoding():
    s = ct.summarize(np.arange(5.0))
    rows = ct.distribution_rows({"MLE": {"greedy": s, "sampled": s},
                                 "LOO": {"greedy": s, "sampled": s}})
    assert [(r["model"], r["decoding"]) for r in rows] == [
        ("MLE", "greedy"), ("LOO", "greedy"), ("MLE", "sampled"), ("LOO", "sampled")]
    assert list(rows[0]) == ["model", "decoding", "n", "mean", "std", "p10", "p25", "p50",
                             "p75", "p90"]


def test_relative_gain_picks_the_rows_of_one_decoding():
    rows = [{"model": "MLE", "decoding": "greedy", "CIDEr-D": 0.5},
            {"model": "LOO", "decoding": "greedy", "CIDEr-D": 0.6},
            {"model": "LOO", "decoding": "beam", "CIDEr-D": 0.9}]
    assert ct.relative_gain(rows, "CIDEr-D", "MLE", "LOO", "greedy") == pytest.approx(0.2)
    with pytest.raises(KeyError, match="beam"):
        ct.relative_gain(rows, "CIDEr-D", "MLE", "LOO", "beam")


def test_with_baseline_keeps_the_other_settings(cfg):
    scst = ct.with_baseline(cfg, "greedy")
    assert scst.rl.baseline == "greedy" and cfg.rl.baseline == "loo"
    assert scst.tune == cfg.tune and scst.rl.num_samples == cfg.rl.num_samples
    with pytest.raises(ValueError, match="baseline='mean'"):
        ct.with_baseline(cfg, "mean")


def test_load_split_is_capped_at_the_split_size(cfg):
    split = ct.load_split(cfg, "test", 10_000)
    assert len(split) == cfg.world.test_size == len(split.batch["image"])
    assert split.head(3).batch["captions"].shape[0] == 3 and len(split.head(3)) == 3


# ---------------------------------------------------------------------------------- ceiling


def _hand_split():
    refs = [["a red circle", "one red circle on grass", "a circle", "red circle left",
             "a red ring"],
            ["two blue squares", "blue squares on water", "two squares", "a blue square",
             "two blue frames"],
            ["a green star above a star", "green star", "two stars", "a star", "stars on sand"]]
    return ct.Split("test", [{"captions": r} for r in refs], {"captions": np.array(refs)})


def test_ceiling_equals_pycocoevalcap_each_reference_against_the_other_four():
    from pycocoevalcap.cider.cider import Cider

    split = _hand_split()
    refs = [ex["captions"] for ex in split.examples]
    mean, per = ct.reference_ceiling(split)
    want = np.zeros((3, 5))
    for k in range(5):
        gts = {i: r[:k] + r[k + 1:] for i, r in enumerate(refs)}
        want[:, k] = Cider().compute_score(gts, {i: [r[k]] for i, r in enumerate(refs)})[1]
    np.testing.assert_allclose(per, want, atol=1e-12)
    assert mean == pytest.approx(want.mean())

    preds = ["a red circle on grass", "blue squares", "a star"]
    loo = ct.leave_one_out_cider(preds, split)
    want_loo = np.mean([Cider().compute_score({i: r[:k] + r[k + 1:] for i, r in enumerate(refs)},
                                              {i: [p] for i, p in enumerate(preds)})[0]
                        for k in range(5)])
    assert loo == pytest.approx(want_loo, abs=1e-12)
    assert loo > ct.leave_one_out_cider(["wall wall", "wall wall", "wall wall"], split)
    with pytest.raises(ValueError, match="2 predictions for 3"):
        ct.leave_one_out_cider(preds[:2], split)


# ------------------------------------------------------------------------ checkpoint choice


def test_best_checkpoint_keeps_the_highest_validation_score_and_resumes(pre, tmp_path):
    models = [ct.clone(pre.model) for _ in range(3)]
    for i, m in enumerate(models[1:], 1):  # three distinguishable parameter sets
        nnx.update(m, jax.tree.map(lambda x, i=i: x + i, nnx.state(m, nnx.Param)))
    hist = History(tmp_path / "history.jsonl")
    keeper = ct.BestCheckpoint(tmp_path / "best", "CIDEr-D", tmp_path / "history.jsonl")
    for step, (m, v) in enumerate(zip(models, [0.1, 0.3, 0.3], strict=True)):
        hist.append({"kind": "eval", "step": step, "CIDEr-D": v})
        keeper.offer(m, step, {"CIDEr-D": v})
    assert (keeper.step, keeper.value) == (1, 0.3)  # a tie keeps the earlier step
    out = ct.clone(pre.model)
    assert keeper.restore(out) == 1 and _same(out, models[1]) and not _same(out, models[2])
    keeper.close()
    again = ct.BestCheckpoint(tmp_path / "best", "CIDEr-D", tmp_path / "history.jsonl")
    assert (again.step, again.value) == (1, 0.3)
    assert not again.offer(models[2], 3, {"CIDEr-D": 0.25})
    assert again.offer(models[2], 4, {"CIDEr-D": 0.35}) and again.step == 4
    with pytest.raises(KeyError, match="'CIDEr-D' not in"):
        again.offer(models[0], 5, {"reward": 1.0})
    again.close()


# ------------------------------------------------------------------- model-level functions


def test_tune_eval_fn_outputs_agree_with_the_reward_and_the_judge(pre, val, cfg):
    key = jax.random.key(5)
    fn = ct.make_tune_eval(pre.task, val, 3, key)
    a, b = fn(pre.model, 0), fn(pre.model, 1)
    assert a == b  # the fixed key: the same samples every evaluation
    greedy = ct.decode(pre.model, pre.task, val.batch["image"])
    assert a["reward_greedy"] == pytest.approx(
        float(pre.task.reward(greedy[:, None], val.batch)[0].mean()))
    judged = pre.task.evaluate(ct.captions_of(pre.task, greedy), val.examples)
    assert {k: a[k] for k in judged} == judged
    samples = ct.sample(pre.model, pre.task, val.batch["image"], 3, key)
    assert samples.shape == (len(val), 3, pre.task.max_len)
    assert a["reward_sampled"] == pytest.approx(
        float(pre.task.reward(samples, val.batch)[0].mean()))


def test_reward_distribution_counts_and_key(pre, val):
    d = ct.reward_distribution(pre.model, pre.task, val, 3, jax.random.key(1))
    assert d["greedy"]["n"] == len(val) and d["sampled"]["n"] == 3 * len(val)
    greedy = ct.decode(pre.model, pre.task, val.batch["image"])[:, None]
    r = pre.task.reward(greedy, val.batch)[0]
    assert d["greedy"]["mean"] == pytest.approx(float(r.mean()))
    assert d["greedy"]["p50"] == pytest.approx(float(np.median(r)))
    other = ct.reward_distribution(pre.model, pre.task, val, 3, jax.random.key(2))
    assert other["greedy"] == d["greedy"] and other["sampled"] != d["sampled"]


def test_evaluate_models_decodes_every_model_the_same_way(pre, val):
    twin = ct.clone(pre.model)
    rows, decoded = ct.evaluate_models({"a": pre.model, "b": twin}, pre.task, val,
                                       beam_size=1)
    assert [(r["model"], r["decoding"]) for r in rows] == [
        ("a", "greedy"), ("b", "greedy"), ("a", "beam"), ("b", "beam")]
    for r in rows:
        assert {"CIDEr-D", "BLEU-4", "ROUGE-L", "reward", "words", "empty"} <= set(r)
    strip = [{k: v for k, v in r.items() if k != "model"} for r in rows]
    assert strip[0] == strip[1] and strip[2] == strip[3]
    # a beam of width 1 is greedy decoding
    assert decoded["a", "beam"].captions == decoded["a", "greedy"].captions
    assert rows[0]["CIDEr-D"] == pytest.approx(rows[2]["CIDEr-D"])
    d = decoded["a", "greedy"]
    assert rows[0]["CIDEr-D"] == pre.task.evaluate(d.captions, val.examples)["CIDEr-D"]
    assert d.reward.shape == (len(val),) and rows[0]["reward"] == pytest.approx(d.reward.mean())
    shown = ct.example_rows(val, {"a": d}, [2, 0])
    assert [r["image"] for r in shown] == [2, 0]
    assert shown[0]["a"] == d.captions[2] and shown[0]["a CIDEr-D"] == pytest.approx(d.reward[2])
    assert shown[1]["reference"] == val.examples[0]["captions"][0]


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
        best = ct.clone(pre.model)
        checkpoint.restore(tuned["root"] / name / "best", best)
        assert _same(best, run.model)
        # tuning changed the parameters: the last training checkpoint is not the MLE model
        final = ct.clone(pre.model)
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


def test_mle_control_measures_when_nothing_is_shipped(pre, val):
    class Pre:
        model, task, manifest = pre.model, pre.task, {}

    control, where = ct.mle_control(Pre, val)
    assert where == f"measured on {len(val)} images"
    rows = ct.control_rows(control)
    assert [r["word class"] for r in rows] == list(cx.WORD_CLASSES)
    assert all(r["gap"] == pytest.approx(r["wrong image"] - r["true image"]) for r in rows)
    Pre.manifest = {"wrong_image_control": control}
    assert ct.mle_control(Pre, val) == (control, "shipped manifest")
    shuffled = {part: dict(sorted(v.items())) for part, v in control.items()}  # as in JSON
    assert ct.control_rows(shuffled) == rows


def test_captions_of_matches_the_task_detokenizer(pre):
    tokens = np.array([[cap.FIRST_WORD, cap.EOS, 0], [cap.UNK, cap.FIRST_WORD, cap.EOS]])
    assert ct.captions_of(pre.task, tokens) == [pre.task.detokenize(t) for t in tokens]


def test_experiment_config_applies_captioning_defaults_unless_overridden(cfg, monkeypatch):
    monkeypatch.setitem(ct.TUNE_DEFAULTS, "smoke", {"tune.lr": 0.5, "rl.num_samples": 3})
    out = ct.experiment_config(cfg, {})
    assert (out.tune.lr, out.rl.num_samples) == (0.5, 3) and out.tune.num_steps == 4
    kept = ct.experiment_config(cfg, {"tune.lr": 3e-3})
    assert (kept.tune.lr, kept.rl.num_samples) == (cfg.tune.lr, 3)
    monkeypatch.setitem(ct.TUNE_DEFAULTS, "smoke", {"rl.num_samples": 1})
    with pytest.raises(ValueError, match="num_samples=1"):
        ct.experiment_config(cfg, {})


def test_run_dirs_empty_the_tuning_dirs_only(tmp_path):
    first = ct.run_dirs(tmp_path)
    for d in first.values():
        d.mkdir(parents=True, exist_ok=True)
        (d / "x").write_text("old")
    again = ct.run_dirs(tmp_path)
    assert again == first and set(again) == {"mle", "cache", *ct.BASELINES}
    assert (again["mle"] / "x").exists() and (again["cache"] / "x").exists()
    assert not any(again[n].exists() for n in ct.BASELINES)


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


def test_without_java_leaves_the_task_alone(pre):
    import copy
    import dataclasses

    task = copy.copy(pre.task)
    task.cfg = dataclasses.replace(task.cfg, java_metrics=True)
    nj = ct.without_java(task)
    assert nj.cfg.java_metrics is False and task.cfg.java_metrics is True
    assert nj.vocab is task.vocab and nj.scorer is task.scorer


def test_seed_spread_command_prints_one_row_per_model_and_decoding(pre, tmp_path, capsys,
                                                                   monkeypatch):
    import json

    from rlcv_lib.core import shipped as pretrained

    started = {}

    def shipped(recipe, cfg, workdir, **kw):  # the module's MLE model stands in for a shipped one
        started["seed"] = cfg.run.seed
        return pretrained.Pretrained(ct.clone(pre.model), pre.task, pre.history, "shipped",
                                     None, {})

    monkeypatch.setattr(pretrained, "load_or_pretrain", shipped)
    ct.main(["smoke", str(tmp_path), "3", "tune.num_steps=2", "tune.eval_every=2",
             "run.eval_examples=4"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert started == {"seed": 3}
    assert [(r["model"], r["decoding"]) for r in rows] == [
        (m, d) for d in ("greedy", "beam") for m in ("MLE", "LOO", "SCST")]
    assert all(r["seed"] == 3 and r["mle_source"] == "shipped" for r in rows)
    assert all((r["best_step"] in (0, 2)) == (r["model"] != "MLE") for r in rows)
    assert all("METEOR" not in r and 0 <= r["CIDEr-D"] for r in rows)
    assert (tmp_path / "seed3" / "captioning_tune_scst" / "best").is_dir()
    with pytest.raises(SystemExit, match="usage"):
        ct.main(["smoke", str(tmp_path)])
