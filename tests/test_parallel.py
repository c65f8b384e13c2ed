"""Data parallelism: with 8 simulated CPU devices, fit gives the losses and parameters of one
device (within float tolerance), with the batch really split and the parameters replicated.

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
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from rlcv_lib.core import optim, parallel, train

    assert jax.device_count() == 8, jax.devices()

    class MLP(nnx.Module):
        def __init__(self):
            rngs = nnx.Rngs(0)
            self.l1 = nnx.Linear(6, 32, rngs=rngs)
            self.l2 = nnx.Linear(32, 1, rngs=rngs)

        def __call__(self, x):
            return self.l2(jax.nn.gelu(self.l1(x)))[:, 0]

    seen = []

    @nnx.jit
    def step(model, optimizer, batch, rng):
        noise = 0.1 * jax.random.normal(rng, batch["y"].shape)
        def loss_fn(m):
            return jnp.mean((m(batch["x"]) - batch["y"] - noise) ** 2)
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return {"loss": loss}

    def recording_step(model, optimizer, batch, rng):
        seen.append(len(batch["x"].sharding.device_set))
        assert batch["ids"] == ["a"] * 32  # host-side leaves pass through unchanged
        return step(model, optimizer, {"x": batch["x"], "y": batch["y"]}, rng)

    def batch_fn(i):
        r = np.random.default_rng([1, i])
        x = r.normal(size=(32, 6)).astype(np.float32)
        return {"x": x, "y": np.cos(x).sum(-1).astype(np.float32), "ids": ["a"] * 32}

    cfg = train.TRAIN_PRESETS["smoke"]
    out = {}
    for name, devices in (("one", jax.devices()[:1]), ("eight", jax.devices())):
        seen.clear()
        model = MLP()
        opt = optim.make_optimizer(model, cfg)
        mesh = parallel.make_mesh(devices)
        res = train.fit(model, opt, recording_step, batch_fn, num_steps=4, log_every=1,
                        mesh=mesh, progress=False)
        kernel = model.l1.kernel.value
        out[name] = {
            "losses": [r["loss"] for r in res.history.records("train")],
            "params": [np.asarray(x).ravel().tolist()
                       for x in jax.tree.leaves(nnx.state(model, nnx.Param))],
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


@pytest.fixture(scope="module")
def runs():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_eight_devices_match_one(runs):
    one, eight = runs["one"], runs["eight"]
    assert one["batch_devices"] == [1] * 4 and eight["batch_devices"] == [8] * 4
    assert eight["param_devices"] == 8 and eight["param_replicated"]
    np.testing.assert_allclose(eight["losses"], one["losses"], rtol=1e-5)
    assert one["losses"][0] != one["losses"][-1]  # training moved
    for a, b in zip(one["params"], eight["params"], strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


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
    for var in ("JAX_COORDINATOR_ADDRESS", "RLCV_DISTRIBUTED"):
        monkeypatch.delenv(var, raising=False)
    called = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: called.append(1))
    assert parallel.maybe_initialize_distributed() is False and not called
    monkeypatch.setenv("RLCV_DISTRIBUTED", "1")
    assert parallel.maybe_initialize_distributed() is True and called == [1]
