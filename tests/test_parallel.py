"""Data parallelism: with 8 simulated CPU devices, and with two local processes
(``jax.distributed`` over gloo), fit gives the losses and parameters of one device (within float
tolerance), with the batch really split and the parameters replicated.

The 8 devices need ``XLA_FLAGS`` before JAX starts, so that part runs in a subprocess."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from rlcv_lib.core import parallel

SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np, optax
    from flax import nnx
    from rlcv_lib.config import get_config
    from rlcv_lib.core import parallel, pretrain, steps, train
    from rlcv_lib.core.reinforce import RLConfig
    from rlcv_lib.models import MODEL_PRESETS, build_model
    from rlcv_lib.tasks.detection import pretrain as dp
    from rlcv_lib.tasks.toy.task import SortTask

    assert jax.device_count() == 8, jax.devices()
    task = SortTask(max_numbers=4, image_size=MODEL_PRESETS["smoke"].image_size)
    seen = []

    def batch_fn(i):  # 8 images: one per device
        return task.batch(seed=0, step=i, batch_size=8)

    def recording(step):  # the core step, through fit's pure path, records the batch's devices
        def functional(model, optimizer):
            pure = step.functional(model, optimizer)
            def run(state, batch, rng):
                seen.append(len(batch["image"].sharding.device_set))
                return pure.step(state, batch, rng)
            return steps.FunctionalStep(pure.state, run, pure.sync)
        fn = lambda *a: step(*a)
        fn.functional = functional
        return fn

    def params(model):
        return [np.asarray(x).ravel().tolist()
                for x in jax.tree.leaves(nnx.state(model, nnx.Param))]

    def sgd(model):  # linear in the gradient: the devices' float noise is not amplified
        return nnx.Optimizer(model, optax.sgd(0.05), wrt=nnx.Param)

    out = {}
    for name, devices in (("one", jax.devices()[:1]), ("eight", jax.devices())):
        mesh = parallel.make_mesh(devices)
        model = build_model(MODEL_PRESETS["smoke"], task, seed=0)
        seen.clear()
        mle = train.fit(model, sgd(model),
                        recording(steps.make_mle_step(task)), batch_fn, num_steps=3,
                        log_every=1, mesh=mesh, progress=False)
        rl = train.fit(model, sgd(model),
                       recording(steps.make_rl_step(task, RLConfig(num_samples=2))), batch_fn,
                       num_steps=2, seed=1, log_every=1, mesh=mesh, progress=False)
        kernel = jax.tree.leaves(nnx.state(model, nnx.Param))[0]
        # the pretraining entry point, on the scenes world, with the same mesh
        cfg = get_config("smoke", {"train.num_steps": 2, "train.eval_every": 2,
                                   "train.log_every": 1})
        pre = pretrain.pretrain(dp.RECIPE, cfg, None, eval_examples=8, train_size=16,
                                progress=False, mesh=mesh)
        out[name] = {
            "losses": [r["loss"] for r in mle.history.records("train")]
                      + [r["loss"] for r in rl.history.records("train")],
            "rewards": [r["reward_mean"] for r in rl.history.records("train")],
            "params": params(model),
            "pretrain_losses": [r["loss"] for r in pre.history.records("train")],
            "batch_devices": seen[:],
            "param_devices": len(kernel.sharding.device_set),
            "param_replicated": kernel.sharding.is_fully_replicated,
        }
    try:
        parallel.shard_batch({"x": np.ones((3, 2))}, parallel.make_mesh())
        out["error"] = ""
    except ValueError as e:
        out["error"] = str(e)
    json.dump(out, sys.stdout)
""")


PROCESS = textwrap.dedent('''
import json, sys
from rlcv_lib.core import parallel
assert parallel.maybe_initialize_distributed()
import jax, numpy as np, optax
from flax import nnx
from rlcv_lib.core import steps, train
from rlcv_lib.models import MODEL_PRESETS, build_model
from rlcv_lib.tasks.toy.task import SortTask
task = SortTask(max_numbers=4, image_size=MODEL_PRESETS["smoke"].image_size)
model = build_model(MODEL_PRESETS["smoke"], task, seed=0)
opt = nnx.Optimizer(model, optax.sgd(0.05), wrt=nnx.Param)
sl = parallel.process_slice(8)
res = train.fit(model, opt, steps.make_mle_step(task),
                lambda i: {k: v[sl] for k, v in task.batch(seed=0, step=i, batch_size=8).items()},
                num_steps=3, log_every=1, mesh=parallel.make_mesh(), progress=False)
print(json.dumps({"process": jax.process_index(), "devices": jax.device_count(),
                  "losses": [r["loss"] for r in res.history.records("train")],
                  "params": [float(np.abs(np.asarray(x.addressable_data(0))).sum())
                             for x in jax.tree.leaves(nnx.state(model, nnx.Param))]}))
''')


def _toy_fit_on_one_device():
    import optax
    from flax import nnx

    from rlcv_lib.core import steps, train
    from rlcv_lib.models import MODEL_PRESETS, build_model
    from rlcv_lib.tasks.toy.task import SortTask

    task = SortTask(max_numbers=4, image_size=MODEL_PRESETS["smoke"].image_size)
    model = build_model(MODEL_PRESETS["smoke"], task, seed=0)
    opt = nnx.Optimizer(model, optax.sgd(0.05), wrt=nnx.Param)
    res = train.fit(model, opt, steps.make_mle_step(task),
                    lambda i: task.batch(seed=0, step=i, batch_size=8), num_steps=3,
                    log_every=1, mesh=parallel.make_mesh(jax.devices()[:1]), progress=False)
    return ([r["loss"] for r in res.history.records("train")],
            [float(np.abs(np.asarray(x)).sum()) for x in jax.tree.leaves(nnx.state(model,
                                                                                  nnx.Param))])


def test_two_processes_match_one():
    """Multi-host through jax.distributed: two local CPU processes (gloo), each building half
    of every batch (process_slice), train as one process does on the whole batch."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    root = os.path.dirname(os.path.dirname(__file__))
    procs = [subprocess.Popen([sys.executable, "-c", PROCESS], cwd=root, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=dict(os.environ, JAX_PLATFORMS="cpu",
                                       JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                                       JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i)))
             for i in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    losses, params = _toy_fit_on_one_device()
    assert [o["process"] for o in outs] == [0, 1] and all(o["devices"] == 2 for o in outs)
    for o in outs:
        np.testing.assert_allclose(o["losses"], losses, rtol=1e-5)
        np.testing.assert_allclose(o["params"], params, rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def runs():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_eight_devices_match_one(runs):
    """The core MLE and RL steps and the pretraining entry point, on the path fit takes (the
    pure, donated step), give on 8 devices what they give on one, within float tolerance."""
    one, eight = runs["one"], runs["eight"]
    assert one["batch_devices"] == [1] * 5 and eight["batch_devices"] == [8] * 5
    assert eight["param_devices"] == 8 and eight["param_replicated"]
    np.testing.assert_allclose(eight["losses"], one["losses"], rtol=1e-4)
    np.testing.assert_allclose(eight["rewards"], one["rewards"], rtol=1e-5)
    assert one["losses"][0] != one["losses"][2]  # training moved
    for a, b in zip(one["params"], eight["params"], strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
    # the entry point's own optimizer (Adafactor) is scale-free, so near-zero gradients' float
    # noise moves parameters by up to lr: its losses are the comparison
    np.testing.assert_allclose(eight["pretrain_losses"], one["pretrain_losses"], rtol=1e-4)


def test_indivisible_batch_is_named(runs):
    assert "batch leaf ['x'] has leading dimension 3, not divisible by the 8" in runs["error"]


def test_shard_batch_on_one_device():
    mesh = parallel.make_mesh(jax.devices()[:1])
    batch = {"x": np.ones((4, 3), np.float32), "names": ["a", "b"], "scalar": np.float32(1)}
    out = parallel.shard_batch(batch, mesh)
    assert isinstance(out["x"], jax.Array) and out["names"] == ["a", "b"]
    np.testing.assert_array_equal(np.asarray(out["x"]), batch["x"])
    assert parallel.process_slice(8) == slice(0, 8)
    with pytest.raises(ValueError, match="needs at least one device"):
        parallel.make_mesh([])


def test_distributed_init_only_when_asked(monkeypatch):
    for var in ("JAX_COORDINATOR_ADDRESS", "RLCV_DISTRIBUTED", "JAX_NUM_PROCESSES",
                "JAX_PROCESS_ID"):
        monkeypatch.delenv(var, raising=False)
    called, updates = [], []
    monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: called.append(k))
    monkeypatch.setattr(jax.config, "update", lambda *a: updates.append(a))
    assert parallel.maybe_initialize_distributed() is False and not called
    monkeypatch.setenv("RLCV_DISTRIBUTED", "1")
    assert parallel.maybe_initialize_distributed() is True and called == [{}]
    assert updates == [("jax_cpu_collectives_implementation", "gloo")]
    monkeypatch.delenv("RLCV_DISTRIBUTED")
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:1234")
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES"):
        parallel.maybe_initialize_distributed()
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "1")
    assert parallel.maybe_initialize_distributed() is True
    assert called[-1] == {"coordinator_address": "127.0.0.1:1234", "num_processes": 2,
                          "process_id": 1}
