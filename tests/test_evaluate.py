"""The shared evaluation layer: splits, chunked model calls, the best-state keeper, the controls,
statistics and seed offsets (smoke preset, untrained tiny models)."""

import jax
import numpy as np
import pytest
from flax import nnx

from rlcv_lib.config import get_config
from rlcv_lib.core import evaluate as ev
from rlcv_lib.core import sampling, steps
from rlcv_lib.core.history import History
from rlcv_lib.core.reinforce import RLConfig
from rlcv_lib.models import build_model
from rlcv_lib.tasks.captioning import pretrain as cp
from rlcv_lib.tasks.detection import pretrain as dp


@pytest.fixture(scope="module")
def cfg():
    return get_config("smoke")


@pytest.fixture(scope="module")
def task(cfg):
    return dp.make_task(cfg)


@pytest.fixture(scope="module")
def model(cfg, task):
    return build_model(cfg.model, task, seed=0)


@pytest.fixture(scope="module")
def split(cfg):
    return ev.load_split(cfg, "validation", 8)


def _params(model):
    return jax.tree.leaves(jax.tree.map(np.asarray, nnx.state(model, nnx.Param)))


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(_params(a), _params(b), strict=True))


def _shifted(model, by):
    out = nnx.clone(model)
    nnx.update(out, jax.tree.map(lambda x: x + by, nnx.state(out, nnx.Param)))
    return out


# ------------------------------------------------------------------------------------ splits


def test_load_split_is_capped_at_the_split_size_and_heads_are_views(cfg):
    split = ev.load_split(cfg, "test", 10_000)
    assert len(split) == cfg.world.test_size == len(split.batch["image"])
    assert len({e["image_id"] for e in split.examples}) == cfg.world.test_size
    head = split.head(3)
    assert len(head) == 3 and head.batch["captions"].shape[0] == 3
    assert [e["image_id"] for e in head.examples] == [e["image_id"]
                                                      for e in split.examples[:3]]
    first = ev.load_split(cfg, "test", 3)
    np.testing.assert_array_equal(first.batch["image"], head.batch["image"])
    with pytest.raises(ValueError, match="num_examples"):
        ev.load_split(cfg, "test", 0)


# ----------------------------------------------------------------------- chunked model calls


def test_chunked_calls_equal_one_call(model, task, split):
    images = split.batch["image"]
    spec = sampling.DecodeSpec.for_task(task)
    whole = np.asarray(sampling.greedy_jit(model, images, spec).tokens[:, 0])
    np.testing.assert_array_equal(ev.decode(model, task, images, chunk=3), whole)
    lp, lsm = ev.teacher_forced(model, task, images, whole, chunk=3)
    tf = sampling.teacher_forced_jit(model, images, whole[:, None], spec)
    np.testing.assert_allclose(lp, np.asarray(tf.logprobs[:, 0]), atol=1e-5)
    np.testing.assert_allclose(lsm, np.asarray(tf.log_softmax[:, 0]), atol=1e-5)
    masks = {"all": whole >= 0, "none": whole < 0}
    nll = ev.masked_nll(model, task, images, whole, masks, chunk=5)
    assert nll["all"] == pytest.approx(float(-lp.mean()), rel=1e-5) and np.isnan(nll["none"])
    with pytest.raises(ValueError, match="chunk"):
        ev.decode(model, task, images, chunk=0)


def test_sample_is_a_pure_function_of_key_and_chunk(model, task, split):
    images = split.batch["image"]
    key = jax.random.key(3)
    a = ev.sample(model, task, images, 2, key, chunk=3)
    assert a.shape == (len(images), 2, task.max_len)
    np.testing.assert_array_equal(a, ev.sample(model, task, images, 2, key, chunk=3))
    assert (a != ev.sample(model, task, images, 2, jax.random.key(4), chunk=3)).any()
    # chunk c draws with fold_in(key, c): the first chunk is the one-call sample of its images
    spec = steps.rl_spec(task, RLConfig(num_samples=2, baseline="none"))
    first = sampling.sample_jit(model, images[:3], jax.random.fold_in(key, 0), spec).tokens
    np.testing.assert_array_equal(a[:3], np.asarray(first))


# ----------------------------------------------------------------------- the checkpoint choice


@pytest.mark.parametrize("on_disk", [False, True])
def test_best_state_keeps_the_highest_score_ties_the_earlier(model, tmp_path, on_disk):
    models = [model, _shifted(model, 1.0), _shifted(model, 2.0)]
    directory = tmp_path / "best" if on_disk else None
    hist = History(tmp_path / "history.jsonl")
    keeper = ev.BestState("CIDEr-D", directory, tmp_path / "history.jsonl")
    for step, (m, v) in enumerate(zip(models, [0.1, 0.3, 0.3], strict=True)):
        hist.append({"kind": "eval", "step": step, "CIDEr-D": v})
        assert keeper.offer(m, step, {"CIDEr-D": v}) == (step < 2)
    assert (keeper.step, keeper.value) == (1, 0.3)  # a tie keeps the earlier step
    out = nnx.clone(model)
    assert keeper.restore(out) == 1 and _same(out, models[1]) and not _same(out, models[2])
    with pytest.raises(KeyError, match="'CIDEr-D' not in"):
        keeper.offer(model, 5, {"reward": 1.0})
    keeper.close()
    if on_disk:  # a resumed run recovers the best so far from the checkpoint and the history
        again = ev.BestState("CIDEr-D", directory, tmp_path / "history.jsonl")
        assert (again.step, again.value) == (1, 0.3)
        assert not again.offer(models[2], 3, {"CIDEr-D": 0.25})
        assert again.offer(models[2], 4, {"CIDEr-D": 0.35}) and again.step == 4
        again.close()
    with pytest.raises(RuntimeError, match="no evaluation"):
        ev.BestState("mAP").restore(model)


# -------------------------------------------------------------------------------- controls


def test_wrong_image_control_and_its_rows(model, task, split):
    control = ev.wrong_image_control(dp.RECIPE, model, task, split.batch)
    for k in dp.TOKEN_KINDS:
        assert control["gap"][k] == pytest.approx(control["wrong"][k] - control["true"][k],
                                                  nan_ok=True)
    same = dict(split.batch, image=np.repeat(split.batch["image"][:1], len(split), axis=0))
    flat = ev.wrong_image_control(dp.RECIPE, model, task, same)
    assert all(abs(v) < 1e-5 for v in flat["gap"].values() if np.isfinite(v))
    with pytest.raises(ValueError, match=">= 2 images"):
        ev.wrong_image_control(dp.RECIPE, model, task, {k: v[:1] for k, v in split.batch.items()})
    rows = ev.control_rows(control, order=dp.TOKEN_KINDS)
    assert [r["token kind"] for r in rows] == [k for k in dp.TOKEN_KINDS if k in control["true"]]
    assert all(r["gap"] == pytest.approx(r["NLL wrong image"] - r["NLL true image"], nan_ok=True)
               for r in rows)
    shuffled = {part: dict(sorted(v.items())) for part, v in control.items()}  # as in JSON
    assert ev.control_rows(shuffled, order=dp.TOKEN_KINDS) == rows
    words = ev.control_rows({p: {"zz": 1.0, "colour": 2.0} for p in ("true", "wrong", "gap")},
                            kind="word class", order=cp.WORD_CLASSES)
    assert [r["word class"] for r in words] == ["colour", "zz"]  # then the kinds not in order


def test_update_seconds_uses_the_median_rate():
    h = History()
    h.append({"kind": "eval", "step": 0, "mAP": 0.0})
    for step, rate in ((10, 0.1), (20, 2.0), (30, 2.5), (40, 1.0)):  # first: compile
        h.append({"kind": "train", "step": step, "steps_per_s": rate, "loss": 1.0})
    assert ev.update_seconds(h) == pytest.approx(40 / 1.5)
    with pytest.raises(ValueError, match="no train record"):
        ev.update_seconds(History())


def test_continue_mle_trains_a_copy(cfg, model, task):
    before = _params(model)
    trained, info = ev.continue_mle(dp.RECIPE, cfg, model, task, seconds=60.0, train_size=16,
                                    max_steps=2)
    assert info["steps"] == 2 and info["seconds"] >= 0
    assert all(np.array_equal(a, b) for a, b in zip(before, _params(model), strict=True))
    assert not _same(trained, model)
    _, none = ev.continue_mle(dp.RECIPE, cfg, model, task, seconds=0.0, train_size=16)
    assert none["steps"] == 0
    with pytest.raises(ValueError, match="seconds"):
        ev.continue_mle(dp.RECIPE, cfg, model, task, seconds=-1.0)


# ------------------------------------------------------------------------------ statistics


def test_pearson():
    assert ev.pearson([1, 2, 3, 4], [2, 4, 6, 8]) == pytest.approx(1.0)
    assert ev.pearson([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(ev.pearson([1, 2, 3], [5, 5, 5]))
    assert np.isnan(ev.pearson([0.1, 0.1, 0.1], [1, 2, 3]))  # np.std of it is 1.4e-17, not 0
    assert np.isnan(ev.pearson([1, 2], [1, 2]))
    with pytest.raises(ValueError):
        ev.pearson([1, 2, 3], [1, 2])


def test_summarize_percentiles_exact_on_a_hand_built_case():
    got = ev.summarize(np.array([[4.0, 1.0], [3.0, 2.0]]))
    assert list(got) == ["n", "mean", "std", "p10", "p25", "p50", "p75", "p90"]
    # sorted 1,2,3,4: the q-th percentile sits at position 3q/100 (linear interpolation)
    want = {"n": 4, "mean": 2.5, "std": np.sqrt(1.25), "p10": 1.3, "p25": 1.75, "p50": 2.5,
            "p75": 3.25, "p90": 3.7}
    assert got == pytest.approx(want, abs=1e-12)
    assert ev.summarize(np.arange(101.0))["p90"] == 90.0
    with pytest.raises(ValueError, match="at least one"):
        ev.summarize(np.array([]))


def test_seed_spread_is_the_sample_std():
    s = ev.seed_spread([52.81, 52.80, 52.48])
    assert s["n"] == 3 and s["mean"] == pytest.approx(52.6966667)
    assert s["std"] == pytest.approx(np.std([52.81, 52.80, 52.48], ddof=1))
    assert (s["min"], s["max"]) == (52.48, 52.81)
    assert np.isnan(ev.seed_spread([1.0])["std"])
    with pytest.raises(ValueError, match="at least one"):
        ev.seed_spread([])


def test_seed_offsets_are_distinct_and_named():
    offsets = list(ev.SEED_OFFSETS.values())
    assert len(set(offsets)) == len(offsets)
    assert ev.seed_for(5, "tune") == 5 + ev.SEED_OFFSETS["tune"]
    with pytest.raises(ValueError, match="unknown seed purpose 'x'"):
        ev.seed_for(0, "x")
