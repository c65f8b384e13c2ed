"""Optimisers and schedules: schedule values, accumulation == big batch, decay mask, Adafactor
factoring, errors naming the bad value."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rlcv_lib.core import optim
from rlcv_lib.core.train import TrainConfig

BASE = TrainConfig(lr=1e-2, warmup_steps=10, num_steps=110, grad_clip_norm=0.0)


@pytest.mark.parametrize("kind, expected", [
    ("constant", {0: 0.0, 5: 0.5, 10: 1.0, 60: 1.0, 110: 1.0, 500: 1.0}),
    ("cosine", {0: 0.0, 5: 0.5, 10: 1.0, 35: 0.5 * (1 + np.cos(np.pi / 4)), 60: 0.5,
                110: 0.0, 500: 0.0}),
])
def test_schedule_values(kind, expected):
    mult = optim.schedule_multiplier(dataclasses.replace(BASE, schedule=kind))
    lr = optim.learning_rate(dataclasses.replace(BASE, schedule=kind))
    for t, want in expected.items():
        assert float(mult(t)) == pytest.approx(want, abs=1e-6), (kind, t)
        assert float(lr(t)) == pytest.approx(1e-2 * want, abs=1e-8), (kind, t)


def test_schedule_without_warmup_starts_at_peak():
    mult = optim.schedule_multiplier(dataclasses.replace(BASE, warmup_steps=0))
    assert float(mult(0)) == 1.0


class Linear(nnx.Module):
    def __init__(self):
        self.dense = nnx.Linear(40, 36, rngs=nnx.Rngs(0))  # >= 32 per side: Adafactor factors

    def __call__(self, x):
        return self.dense(x)


def _data(n):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 40)).astype(np.float32)
    return x, (x @ rng.normal(size=(40, 36)) / 6).astype(np.float32)


@nnx.jit
def _step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
    optimizer.update(model, grads)
    return loss


@pytest.mark.parametrize("name", ["adafactor", "adamw"])
def test_accumulation_equals_big_batch(name):
    cfg = dataclasses.replace(BASE, optimizer=name, warmup_steps=1, grad_clip_norm=1.0,
                              weight_decay=1e-3)
    k, updates = 4, 2
    x, y = _data(8 * k * updates)
    big, big_opt = Linear(), None
    big_opt = optim.make_optimizer(big, cfg)
    small = Linear()
    small_opt = optim.make_optimizer(small, dataclasses.replace(cfg, grad_accum_steps=k))
    before = np.asarray(small.dense.kernel.value)
    for u in range(updates):
        chunk = slice(u * 8 * k, (u + 1) * 8 * k)
        _step(big, big_opt, x[chunk], y[chunk])
        for i in range(k):
            micro = slice(chunk.start + 8 * i, chunk.start + 8 * (i + 1))
            _step(small, small_opt, x[micro], y[micro])
            if u == 0 and i < k - 1:  # no update before the k-th micro-batch
                np.testing.assert_array_equal(np.asarray(small.dense.kernel.value), before)
    moved = np.abs(np.asarray(big.dense.kernel.value) - before).max()
    assert moved > 1e-3  # the comparison below is not between two unmoved models
    for a, b in zip(jax.tree.leaves(nnx.state(big, nnx.Param)),
                    jax.tree.leaves(nnx.state(small, nnx.Param)), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=0)


def test_weight_decay_only_on_kernels_and_scaled_by_schedule():
    cfg = dataclasses.replace(BASE, optimizer="adamw", weight_decay=0.1, warmup_steps=4)
    model = Linear()
    model.dense.bias.value = jnp.ones_like(model.dense.bias.value)
    opt = optim.make_optimizer(model, cfg)
    zero = jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param))
    kernel0 = np.asarray(model.dense.kernel.value)
    opt.update(model, zero)  # t = 0: multiplier 0, nothing moves
    np.testing.assert_array_equal(np.asarray(model.dense.kernel.value), kernel0)
    opt.update(model, zero)  # t = 1: multiplier 1/4, decay 0.1 * 1/4, not times lr
    np.testing.assert_allclose(np.asarray(model.dense.kernel.value), kernel0 * (1 - 0.025),
                               rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(model.dense.bias.value), 1.0)


def test_adafactor_state_is_factored():
    model = Linear()
    opt = optim.make_optimizer(model, BASE)
    shapes = {x.shape for x in jax.tree.leaves(nnx.state(opt)) if hasattr(x, "shape")}
    assert (40,) in shapes and (36,) in shapes  # row and column statistics of the kernel
    # The only full-size kernel state is the bf16 momentum (big_vision's dtype).
    full = [x for x in jax.tree.leaves(nnx.state(opt)) if getattr(x, "shape", ()) == (40, 36)]
    assert [x.dtype for x in full] == [jnp.bfloat16]


@pytest.mark.parametrize("name", ["adafactor", "adamw"])
def test_clipping_rescales_to_the_global_norm(name):
    """Two updates with a huge then a small gradient: with clipping at 1 they equal the
    unclipped updates of the huge gradient rescaled to global norm 1 (and differ without)."""
    cfg = dataclasses.replace(BASE, optimizer=name, grad_clip_norm=1.0, warmup_steps=0)
    params = nnx.state(Linear(), nnx.Param)
    rng = np.random.default_rng(1)
    a = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
    b = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape) * 1e-3, jnp.float32), params)
    norm = float(jnp.sqrt(sum(jnp.sum(x ** 2) for x in jax.tree.leaves(a))))

    def run(tx, grads):
        state, out = tx.init(params), None
        for g in grads:
            out, state = tx.update(g, state, params)
        return np.concatenate([np.ravel(x) for x in jax.tree.leaves(out)])

    no_clip = optim.make_tx(dataclasses.replace(cfg, grad_clip_norm=0.0))
    clipped = run(optim.make_tx(cfg), [jax.tree.map(lambda x: x * 1000, a), b])
    manual = run(no_clip, [jax.tree.map(lambda x: x / norm, a), b])
    raw = run(no_clip, [jax.tree.map(lambda x: x * 1000, a), b])
    np.testing.assert_allclose(clipped, manual, rtol=1e-4, atol=1e-7)
    assert not np.allclose(clipped, raw, rtol=1e-2)


@pytest.mark.parametrize("field, value, match", [
    ("optimizer", "sgd", "train.optimizer must be 'adafactor' or 'adamw', got 'sgd'"),
    ("schedule", "linear", "train.schedule must be 'constant' or 'cosine', got 'linear'"),
    ("lr", 0.0, "train.lr must be > 0, got 0.0"),
    ("grad_accum_steps", 0, "train.grad_accum_steps must be >= 1, got 0"),
])
def test_bad_values_are_named(field, value, match):
    with pytest.raises(ValueError, match=match):
        optim.make_tx(dataclasses.replace(BASE, **{field: value}))


def test_equal_configs_share_one_compiled_step():
    """nnx.Optimizer compares its tx by identity: equal configs must give the same tx, or every
    new optimizer recompiles the step."""
    assert optim.make_tx(BASE) is optim.make_tx(dataclasses.replace(BASE))
    traces = []

    @nnx.jit
    def step(model, optimizer, x):
        traces.append(1)
        grads = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(model)
        optimizer.update(model, grads)

    x = jnp.ones((2, 40))
    for _ in range(2):
        model = Linear()
        step(model, optim.make_optimizer(model, dataclasses.replace(BASE)), x)
    assert len(traces) == 1


def test_scale_output_columns_scales_only_the_heads_columns():
    tx = optim.scale_output_columns((1, 3), 10.0)
    assert optim.scale_output_columns((1, 3), 10.0) is tx  # cached: jitted steps compile once
    updates = {"decoder": {"head": {"kernel": jnp.ones((2, 5)), "bias": jnp.ones(5)},
                           "mlp": {"kernel": jnp.ones((2, 5))}},
               "encoder": {"head": {"kernel": jnp.ones((2, 5))}}}
    out, _ = tx.update(updates, tx.init(updates))
    want = np.array([1, 10, 1, 10, 1], np.float32)
    np.testing.assert_array_equal(out["decoder"]["head"]["kernel"], np.tile(want, (2, 1)))
    np.testing.assert_array_equal(out["decoder"]["head"]["bias"], want)
    np.testing.assert_array_equal(out["decoder"]["mlp"]["kernel"], np.ones((2, 5)))
    np.testing.assert_array_equal(out["encoder"]["head"]["kernel"], np.ones((2, 5)))
    with pytest.raises(ValueError, match="factor"):
        optim.scale_output_columns((1,), 0.0)
