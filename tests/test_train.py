"""The training loop: exact resume, NaN stop with a good checkpoint kept, history, no per-step
sync. A tiny MLP regression with a noisy target (so the per-step rng matters) stands in for
the real models; its step has the shape of ``rlcv_lib.core.steps``."""

import dataclasses
import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rlcv_lib.core import checkpoint, optim, train
from rlcv_lib.core.history import read

CFG = dataclasses.replace(train.TRAIN_PRESETS["smoke"], lr=3e-2, warmup_steps=2,
                          grad_accum_steps=2, batch_size=8, num_steps=4)


class MLP(nnx.Module):
    def __init__(self, seed: int):
        rngs = nnx.Rngs(seed)
        self.l1 = nnx.Linear(4, 16, rngs=rngs)
        self.l2 = nnx.Linear(16, 1, rngs=rngs)

    def __call__(self, x):  # [B, 4] -> [B]
        return self.l2(jax.nn.gelu(self.l1(x)))[:, 0]


@nnx.jit
def mse_step(model, optimizer, batch, rng):
    noise = 0.1 * jax.random.normal(rng, batch["y"].shape)

    def loss_fn(m):
        return jnp.mean((m(batch["x"]) - batch["y"] - noise) ** 2)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return {"loss": loss, "target_mean": jnp.mean(batch["y"])}


def batch_fn(index: int, size: int = 4) -> dict:
    rng = np.random.default_rng([7, index])
    x = rng.normal(size=(size, 4)).astype(np.float32)
    return {"x": x, "y": np.sin(x).sum(-1).astype(np.float32)}


def make(seed: int = 0, cfg=CFG):
    model = MLP(seed)
    return model, optim.make_optimizer(model, cfg)


def params(model) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


def test_resume_is_exact(tmp_path):
    kw = dict(seed=3, log_every=2, progress=False, steps_per_update=2)
    model, opt = make()
    full = train.fit(model, opt, mse_step, batch_fn, num_steps=8, workdir=tmp_path / "a",
                     ckpt_every=3, **kw)
    # Stopped after 3 steps (mid-accumulation: MultiSteps holds a partial gradient sum)...
    m1, o1 = make()
    train.fit(m1, o1, mse_step, batch_fn, num_steps=3, workdir=tmp_path / "b", **kw)
    # ... and resumed in a fresh process-like state: other init, nothing shared.
    m2, o2 = make(seed=99)
    res = train.fit(m2, o2, mse_step, batch_fn, num_steps=8, workdir=tmp_path / "b", **kw)
    assert res.start_step == 3 and res.step == 8
    for a, b in zip(params(model), params(m2), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(o2.step.value) == int(opt.step.value) == 8
    def strip(records):
        return {r["step"]: {k: v for k, v in r.items() if k not in ("time", "steps_per_s")}
                for r in records}

    resumed, uncut = strip(read(tmp_path / "b" / "history.jsonl")), strip(full.history.records())
    assert sorted(resumed) == [2, 3, 4, 6, 8]  # 3: the end of the first call
    # Identical records, except for the log interval that the interruption cut (steps 3-4).
    assert [resumed[s] for s in (2, 6, 8)] == [uncut[s] for s in (2, 6, 8)]
    # A finished run resumes to its end and trains nothing.
    m3, o3 = make(seed=5)
    again = train.fit(m3, o3, mse_step, batch_fn, num_steps=8, workdir=tmp_path / "b", **kw)
    assert again.start_step == 8 and again.last_metrics == res.last_metrics
    np.testing.assert_array_equal(params(m3)[0], params(model)[0])


def test_resume_without_checkpoint_differs(tmp_path):
    """Control for the test above: a fresh start from another init does not end equal."""
    model, opt = make()
    train.fit(model, opt, mse_step, batch_fn, num_steps=4, progress=False)
    m2, o2 = make(seed=99)
    train.fit(m2, o2, mse_step, batch_fn, num_steps=4, progress=False)
    assert not np.allclose(params(model)[0], params(m2)[0])


def test_history_records_and_eval(tmp_path):
    model, opt = make()
    calls = []

    def eval_fn(m, step):
        calls.append(step)
        val = batch_fn(10**6)
        return {"val_mse": float(jnp.mean((m(val["x"]) - val["y"]) ** 2))}

    res = train.fit(model, opt, mse_step, batch_fn, num_steps=5, log_every=2, eval_fn=eval_fn,
                    eval_every=4, eval_at_start=True, progress=False, workdir=tmp_path)
    assert calls == [0, 4, 5]
    recs = read(tmp_path / "history.jsonl")
    assert [(r["kind"], r["step"]) for r in recs] == [
        ("eval", 0), ("train", 2), ("train", 4), ("eval", 4), ("train", 5), ("eval", 5)]
    # A train record is the mean over its interval: steps 3 and 4 here.
    means = np.mean([np.sin(batch_fn(i)["x"]).sum(-1).mean() for i in (2, 3)])
    assert recs[2]["target_mean"] == pytest.approx(means, rel=1e-5)
    assert {"loss", "time", "steps_per_s"} <= set(recs[1])
    assert res.history.column("val_mse", kind="eval")[0].tolist() == [0, 4, 5]


def test_metrics_fetched_only_at_check_steps(monkeypatch):
    fetches = []
    real = jax.device_get
    monkeypatch.setattr(train.jax, "device_get", lambda x: fetches.append(len(x)) or real(x))
    model, opt = make()
    train.fit(model, opt, mse_step, batch_fn, num_steps=7, log_every=3, progress=False)
    assert fetches == [3, 3, 1]  # steps 1-3, 4-6, 7: one fetch per log interval


def nan_batch_fn(index: int) -> dict:
    batch = batch_fn(index)
    if index == 4:  # step 5
        batch["y"][0] = np.inf
    return batch


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path):
    model, opt = make()
    with pytest.raises(train.NonFiniteLossError) as err:
        train.fit(model, opt, mse_step, nan_batch_fn, num_steps=10, log_every=3, ckpt_every=2,
                  workdir=tmp_path, progress=False)
    e = err.value
    assert (e.step, e.window, e.last_good_step) == (5, (5, 6), 4)
    msg = str(e)
    assert "loss is inf at step 5" in msg or "loss is nan at step 5" in msg
    assert "steps 5..6" in msg and "last good checkpoint is step 4" in msg
    assert not np.isfinite(params(model)[0]).all()  # the live model is poisoned...
    # ... the checkpoint of step 4 is not, and equals a clean 4-step run.
    assert checkpoint.Checkpointer(tmp_path / "checkpoints").all_steps() == [2, 4]
    m2, o2 = make(seed=1)
    assert checkpoint.restore(tmp_path / "checkpoints", m2, o2) == 4
    ref, ref_opt = make()
    train.fit(ref, ref_opt, mse_step, batch_fn, num_steps=4, progress=False)
    for a, b in zip(params(m2), params(ref), strict=True):
        np.testing.assert_array_equal(a, b)


def test_nonfinite_params_are_not_checkpointed(tmp_path):
    """A host-side step (Python between jitted parts) that poisons the parameters but
    reports a finite loss: the checkpoint is refused."""

    def step(model, optimizer, batch, rng):
        loss = mse_step(model, optimizer, batch, rng)["loss"]
        if int(optimizer.step.value) == 4:  # after the update of step 4
            model.l1.kernel.value = model.l1.kernel.value * jnp.nan
        return {"loss": float(loss)}

    model, opt = make(cfg=dataclasses.replace(CFG, grad_accum_steps=1))
    with pytest.raises(train.NonFiniteLossError, match="parameters became non-finite by step 4"):
        train.fit(model, opt, step, batch_fn, num_steps=6, log_every=4, ckpt_every=2,
                  workdir=tmp_path, progress=False)
    assert checkpoint.Checkpointer(tmp_path / "checkpoints").all_steps() == [2]


def test_fit_kwargs_scale_with_accumulation():
    kw = train.fit_kwargs(CFG)
    assert kw["num_steps"] == CFG.num_steps * 2 and kw["steps_per_update"] == 2
    assert kw["log_every"] == CFG.log_every * 2
    with pytest.raises(ValueError, match="batch_size 9 is not divisible"):
        train.fit_kwargs(dataclasses.replace(CFG, batch_size=9))


def test_train_section_is_registered():
    from rlcv_lib.config import get_config

    cfg = get_config("smoke", {"train.lr": 0.5}, sections=("train",))
    assert isinstance(cfg.train, train.TrainConfig) and cfg.train.lr == 0.5
    for table in (train.TRAIN_PRESETS, train.TUNE_PRESETS):
        assert set(table) == {"smoke", "cpu", "gpu", "paper"}
    paper = train.TUNE_PRESETS["paper"]
    assert (paper.lr, paper.warmup_steps, paper.schedule, paper.batch_size, paper.num_steps) == (
        1e-6, 4000, "constant", 128, 30000)


def test_fresh_start_refuses_a_used_workdir(tmp_path):
    model, opt = make()
    train.fit(model, opt, mse_step, batch_fn, num_steps=2, workdir=tmp_path, progress=False)
    with pytest.raises(FileExistsError, match=r"already holds checkpoints \[2\]"):
        train.fit(model, opt, mse_step, batch_fn, num_steps=4, workdir=tmp_path, resume=False,
                  progress=False)


# ------------------------------------------------------------------ with the core's own steps


@pytest.fixture(scope="module")
def toy():
    from rlcv_lib.core import steps
    from rlcv_lib.core.reinforce import RL_PRESETS
    from rlcv_lib.models import MODEL_PRESETS, build_model
    from rlcv_lib.tasks.toy.task import SortTask

    task = SortTask(max_numbers=4, image_size=MODEL_PRESETS["smoke"].image_size)
    tcfg = dataclasses.replace(train.TRAIN_PRESETS["smoke"], lr=3e-3, warmup_steps=1)
    rl_cfg = RL_PRESETS["smoke"]

    def new(seed=0):
        model = build_model(MODEL_PRESETS["smoke"], task, seed=seed)
        return model, optim.make_optimizer(model, tcfg)

    return {"task": task, "new": new, "mle": steps.make_mle_step(task),
            "rl": steps.make_rl_step(task, rl_cfg),
            "batch": lambda i: task.batch(seed=0, step=i, batch_size=4)}


def test_fit_runs_the_core_mle_and_rl_steps_and_resumes_exactly(toy, tmp_path):
    """MLE then reward tuning on the toy task through fit; the RL step (sampler, host reward,
    update) resumed from a checkpoint ends where the uninterrupted run does. (Compiling the
    smoke model's steps dominates this test's time.)"""
    model, opt = toy["new"]()
    mle = train.fit(model, opt, toy["mle"], toy["batch"], num_steps=4, log_every=2,
                    progress=False)
    assert {"loss", "token_acc", "grad_norm"} <= set(mle.last_metrics)

    def rl_run(workdir, num_steps, seed_model=model):
        m = nnx.clone(seed_model)
        o = optim.make_optimizer(m, dataclasses.replace(CFG, grad_accum_steps=1))
        res = train.fit(m, o, toy["rl"], toy["batch"], num_steps=num_steps, seed=1,
                        workdir=workdir, log_every=2, progress=False)
        return m, res

    full, res = rl_run(tmp_path / "full", 4)
    train_recs = res.history.records("train")
    assert {"reward_mean", "reward_std", "adv_mean", "adv_std", "entropy", "sample_len",
            "exact_match"} <= set(train_recs[-1])
    rl_run(tmp_path / "cut", 2)
    resumed, res2 = rl_run(tmp_path / "cut", 4, seed_model=toy["new"](seed=7)[0])
    assert res2.start_step == 2
    for a, b in zip(params(full), params(resumed), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["mle", "rl"])
def test_functional_step_matches_the_in_place_step(toy, tmp_path, kind):
    """fit runs a step's functional form (state kept between steps, written back before
    evaluations, checkpoints and the return) to the same parameters, optimizer state, eval
    metrics and checkpoints as the in-place step (the same step without ``.functional``)."""
    assert hasattr(toy[kind], "functional")
    in_place = lambda m, o, b, r: toy[kind](m, o, b, r)  # noqa: E731
    seen = {}

    def run(step_fn, name):
        model, opt = toy["new"]()
        evals = []

        def eval_fn(m, step):
            evals.append(float(sum(np.abs(p).sum() for p in params(m))))
            return {"param_l1": evals[-1]}

        train.fit(model, opt, step_fn, toy["batch"], num_steps=5, seed=1, log_every=2,
                  eval_fn=eval_fn, eval_every=2, ckpt_every=2, workdir=tmp_path / name,
                  progress=False)
        seen[name] = (model, opt, evals)

    run(toy[kind], "functional")
    run(in_place, "in_place")
    (m1, o1, e1), (m2, o2, e2) = seen["functional"], seen["in_place"]
    assert e1 == e2 and len(e1) == 3 and len(set(e1)) == 3  # evals saw each step's model
    for a, b in zip(jax.tree.leaves(nnx.state((m1, o1))), jax.tree.leaves(nnx.state((m2, o2))),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    restored, ropt = toy["new"](seed=3)
    assert checkpoint.restore(tmp_path / "functional" / "checkpoints", restored, ropt) == 5
    for a, b in zip(params(m1), params(restored), strict=True):
        np.testing.assert_array_equal(a, b)


KILLED_RUN = """
import os, signal, sys
sys.path.insert(0, sys.argv[2])
import test_train as T
from rlcv_lib.core import train

def step(model, optimizer, batch, rng):
    if int(optimizer.step.value) == 5:  # the 6th call: SIGKILL, no cleanup of any kind
        os.kill(os.getpid(), signal.SIGKILL)
    return T.mse_step(model, optimizer, batch, rng)

model, opt = T.make()
train.fit(model, opt, step, T.batch_fn, num_steps=8, seed=3, workdir=sys.argv[1], log_every=1,
          ckpt_every=2, progress=False, steps_per_update=2)
"""


def test_killed_run_resumes_to_the_same_result(tmp_path):
    proc = subprocess.run([sys.executable, "-c", KILLED_RUN, str(tmp_path),
                           os.path.dirname(__file__)], capture_output=True, text=True,
                          timeout=300, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert [r["step"] for r in read(tmp_path / "history.jsonl")] == [1, 2, 3, 4, 5]
    kw = dict(seed=3, log_every=1, ckpt_every=2, progress=False, steps_per_update=2)
    m, o = make(seed=42)
    res = train.fit(m, o, mse_step, batch_fn, num_steps=8, workdir=tmp_path, **kw)
    assert res.start_step in (2, 4)  # 4 unless its asynchronous save was cut by the kill
    ref, ref_opt = make()
    full = train.fit(ref, ref_opt, mse_step, batch_fn, num_steps=8, workdir=tmp_path / "ref",
                     **kw)
    for a, b in zip(params(ref), params(m), strict=True):
        np.testing.assert_array_equal(a, b)

    def strip(records):
        return [{k: v for k, v in r.items() if k not in ("time", "steps_per_s")}
                for r in records]

    assert strip(read(tmp_path / "history.jsonl")) == strip(full.history.records())


@pytest.mark.parametrize("table", ["TRAIN_PRESETS", "TUNE_PRESETS"])
def test_presets_build_optimizers(table):
    for preset, cfg in getattr(train, table).items():
        optim.make_tx(cfg)
        kw = train.fit_kwargs(cfg)
        assert kw["num_steps"] >= kw["log_every"] > 0, (table, preset)
        assert cfg.warmup_steps < cfg.num_steps, (table, preset)


def test_the_pure_step_donates_its_state_and_never_the_live_objects(toy):
    """The core steps' pure form donates the state it is given (the buffers are reused), while
    fit trains a private copy: a clone taken before fit, and the live objects between syncs,
    keep readable arrays."""
    model, opt = toy["new"]()
    pure = toy["mle"].functional(model, opt)
    state, _ = pure.step(pure.state, toy["batch"](0), jax.random.key(0))
    # donated: every parameter and optimizer array (Adafactor's unused size-1 placeholders
    # pass through unchanged and keep their buffers)
    assert all(x.is_deleted() or x.size == 1 for x in pure.state)
    assert sum(x.is_deleted() for x in pure.state) > len(pure.state) // 2
    assert not any(x.is_deleted() for x in jax.tree.leaves(nnx.state((model, opt))))
    again = pure.sync(state)  # written back; training continues from a copy
    assert not any(a is b for a, b in zip(again, state, strict=True))
    before = nnx.clone(model)
    kept = params(before)
    train.fit(model, opt, toy["mle"], toy["batch"], num_steps=3, log_every=1, progress=False)
    assert not any(x.is_deleted() for x in jax.tree.leaves(nnx.state(before)))
    for a, b in zip(kept, params(before), strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(kept, params(model), strict=True))


def test_time_budget_stops_after_the_step_that_reaches_it(toy):
    model, opt = toy["new"]()
    res = train.fit(model, opt, toy["mle"], toy["batch"], num_steps=10**6, time_budget=0.0,
                    log_every=5, progress=False)
    assert res.step == 2 and res.timed_seconds > 0  # the first step (compile) is not timed
    assert res.history.records("train")[-1]["step"] == 2
    res = train.fit(*toy["new"](), toy["mle"], toy["batch"], num_steps=3, time_budget=1e9,
                    log_every=5, progress=False)
    assert res.step == 3


KILLED_DONATED_RUN = """
import dataclasses, os, signal, sys
from rlcv_lib.core import optim, steps, train
from rlcv_lib.models import MODEL_PRESETS, build_model
from rlcv_lib.tasks.toy.task import SortTask

task = SortTask(max_numbers=4, image_size=MODEL_PRESETS["smoke"].image_size)
model = build_model(MODEL_PRESETS["smoke"], task, seed=0)
opt = optim.make_optimizer(model, dataclasses.replace(train.TRAIN_PRESETS["smoke"], lr=3e-3))

def batch_fn(i):
    if i == 5 and sys.argv[2] == "kill":  # the 6th step: SIGKILL, no cleanup of any kind
        os.kill(os.getpid(), signal.SIGKILL)
    return task.batch(seed=0, step=i, batch_size=4)

train.fit(model, opt, steps.make_mle_step(task), batch_fn, num_steps=8, seed=3,
          workdir=sys.argv[1], log_every=1, ckpt_every=2, progress=False)
import numpy as np
from flax import nnx
np.savez(os.path.join(sys.argv[1], "params.npz"),
         *[np.asarray(v.value) for _, v in nnx.state(model, nnx.Param).flat_state()])
"""


def test_a_killed_donated_run_with_async_saves_resumes_exactly(tmp_path):
    """The core MLE step through fit (pure, donated state, asynchronous Orbax saves), killed
    mid-run, resumes to the parameters and history of an uninterrupted run."""
    root = os.path.dirname(os.path.dirname(__file__))

    def run(workdir, mode):
        return subprocess.run([sys.executable, "-c", KILLED_DONATED_RUN, str(workdir), mode],
                              capture_output=True, text=True, timeout=300, cwd=root)

    killed = run(tmp_path / "cut", "kill")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert [r["step"] for r in read(tmp_path / "cut" / "history.jsonl")] == [1, 2, 3, 4, 5]
    for workdir in (tmp_path / "cut", tmp_path / "full"):
        done = run(workdir, "run")
        assert done.returncode == 0, done.stderr[-2000:]
    a, b = (np.load(tmp_path / d / "params.npz") for d in ("cut", "full"))
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k])

    def strip(records):
        return [{k: v for k, v in r.items() if k not in ("time", "steps_per_s")}
                for r in records]

    assert strip(read(tmp_path / "cut" / "history.jsonl")) == strip(
        read(tmp_path / "full" / "history.jsonl"))
