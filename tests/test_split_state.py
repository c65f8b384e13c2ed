"""split_state: an update over the flat leaves equals the same update on the live objects."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from rlcv_lib.core import split_state


class Tiny(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.a = nnx.Linear(3, 4, rngs=rngs)
        self.b = nnx.Linear(4, 2, rngs=rngs)

    def __call__(self, x):
        return self.b(jax.nn.relu(self.a(x)))


def make():
    model = Tiny(nnx.Rngs(0))
    return model, nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)


def update(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
    optimizer.update(model, grads)
    return loss


def leaves_of(objects):
    return [np.asarray(v) for v in jax.tree.leaves(nnx.state(objects))]


def test_update_over_leaves_matches_the_in_place_update():
    x = jnp.arange(12.0).reshape(4, 3) / 10
    y = jnp.ones((4, 2))
    live, live_opt = make()
    model, opt = make()
    structure, leaves = split_state.split((model, opt))
    over_leaves = split_state.jit_over_leaves(update, returns_state=True)
    step = over_leaves(structure)
    assert over_leaves(structure) is step  # one compilation per structure
    in_place = nnx.jit(update)
    for _ in range(3):
        expected = in_place(live, live_opt, x, y)
        leaves, loss = step(leaves, x, y)
        np.testing.assert_allclose(loss, expected, rtol=1e-6)
    before = leaves_of((model, opt))
    split_state.write_back((model, opt), structure, leaves)
    after = leaves_of((model, opt))
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    for a, b in zip(after, leaves_of((live, live_opt)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_read_only_function_over_leaves():
    model, opt = make()
    structure, leaves = split_state.split((model, opt))
    predict = split_state.jit_over_leaves(lambda m, o, x: m(x), returns_state=False)(structure)
    x = jnp.ones((2, 3))
    np.testing.assert_allclose(predict(leaves, x), model(x), rtol=1e-6)
    single, single_leaves = split_state.split(model)  # one object, not a tuple
    apply = split_state.jit_over_leaves(lambda m, x: m(x), returns_state=False)(single)
    np.testing.assert_allclose(apply(single_leaves, x), model(x), rtol=1e-6)
