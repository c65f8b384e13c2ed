"""REINFORCE estimators computed *exactly* by enumerating every N-tuple of samples.

The policy is a 3-action, 2-step autoregressive categorical (tabular logits θ = first-step
logits [3] and second-step logits [3,3]); the 9 sequences and all 9^N tuples of N samples are
enumerated, so expectations and variances are sums, not Monte Carlo estimates. The estimator of
∇E[R] is −∇θ of :func:`rlcv_lib.reinforce.pg_loss` with the library's advantages.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlcv_lib.core import reinforce
from rlcv_lib.core.reinforce import RLConfig

A, T = 3, 2
SEQS = jnp.array(list(itertools.product(range(A), repeat=T)))  # [9,2]


def init_theta(seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return {"first": jax.random.normal(k1, (A,)), "second": jax.random.normal(k2, (A, A))}


def token_logp(theta, seqs):  # [...,T] -> [...,T]
    lp0 = jax.nn.log_softmax(theta["first"])[seqs[..., 0]]
    lp1 = jnp.take_along_axis(jax.nn.log_softmax(theta["second"])[seqs[..., 0]],
                              seqs[..., 1:2], axis=-1)[..., 0]
    return jnp.stack([lp0, lp1], axis=-1)


def flat(tree):
    return jnp.concatenate([x.reshape(-1) for x in jax.tree.leaves(tree)])


def exact_gradient(theta, rewards):
    """∇θ Σ_y p(y) R(y)."""
    return flat(jax.grad(lambda th: jnp.sum(jnp.exp(token_logp(th, SEQS).sum(-1)) * rewards))(
        theta))


def greedy_reward(theta, rewards):
    y0 = jnp.argmax(theta["first"])
    y1 = jnp.argmax(theta["second"][y0])
    return rewards[y0 * A + y1]


def estimator_moments(theta, rewards, cfg, n, advantage_fn=None):
    """Exact E[ĝ] and E‖ĝ − E ĝ‖² of the estimator over all 9^n tuples of n samples."""
    tuples = jnp.array(list(itertools.product(range(len(SEQS)), repeat=n)))  # [9^n, n]
    greedy = greedy_reward(theta, rewards)[None]

    def g_hat(idx):
        r = rewards[idx][None]  # [1,n]
        if advantage_fn is None:
            adv, w = reinforce.advantages(r, cfg, greedy_rewards=greedy)
        else:
            adv, w = advantage_fn(r)

        def loss(th):
            lp = token_logp(th, SEQS[idx])[None]  # [1,n,T]
            return reinforce.pg_loss(lp, jnp.ones_like(lp), adv, w)
        return -flat(jax.grad(loss)(theta))

    grads = jax.vmap(g_hat)(tuples)  # [9^n, P]
    p_seq = jnp.exp(token_logp(theta, SEQS).sum(-1))  # [9]
    prob = jnp.prod(p_seq[tuples], axis=1)  # [9^n]
    mean = prob @ grads
    var = prob @ jnp.sum((grads - mean) ** 2, axis=1)
    return mean, var


def single_sample_stats(theta, rewards):
    """E[R], Var[R], E‖s‖², E[R‖s‖²], E[R²‖s‖²], ‖g‖² with s = ∇ log p(y), y ~ p."""
    p = jnp.exp(token_logp(theta, SEQS).sum(-1))
    s = jax.vmap(lambda y: flat(jax.grad(lambda th: token_logp(th, y).sum())(theta)))(SEQS)
    s2 = jnp.sum(s ** 2, axis=1)
    mu = p @ rewards
    g = (p * rewards) @ s
    return dict(mu=mu, var=p @ (rewards - mu) ** 2, es2=p @ s2, ers2=p @ (rewards * s2),
                er2s2=p @ (rewards ** 2 * s2), g2=g @ g)


def loo_variance_formula(st, n):
    """tr Var of the N-sample leave-one-out estimator, derived by hand (see module tests)."""
    same = st["er2s2"] - 2 * st["mu"] * st["ers2"] + (st["mu"] ** 2 + st["var"] / (n - 1)) * st[
        "es2"]
    cross = st["g2"] * (1 + 1 / (n - 1) ** 2)
    return (n * same + n * (n - 1) * cross) / n ** 2 - st["g2"]


REWARDS = jnp.array([0.0, 1.0, 3.0, 0.5, 2.0, 0.0, 1.5, 4.0, 1.0])


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("kw", [dict(baseline="none"), dict(baseline="loo"),
                                dict(baseline="loo", one_sample=True),
                                dict(baseline="greedy")])
def test_estimators_are_unbiased(n, kw):
    theta = init_theta(n)
    exact = exact_gradient(theta, REWARDS)
    mean, _ = estimator_moments(theta, REWARDS, RLConfig(num_samples=n, **kw), n)
    assert float(jnp.linalg.norm(exact)) > 0.1
    np.testing.assert_allclose(mean, exact, atol=2e-5, rtol=1e-4)


def test_a_baseline_that_sees_its_own_sample_is_biased():
    """Sanity check that the enumeration can fail: b_i = mean of *all* N rewards (including
    R_i) shrinks the expected gradient by (N−1)/N."""
    n = 3
    theta = init_theta(1)
    exact = exact_gradient(theta, REWARDS)
    own = lambda r: (r - r.mean(1, keepdims=True), jnp.ones_like(r))  # noqa: E731
    mean, _ = estimator_moments(theta, REWARDS, RLConfig(num_samples=n), n, advantage_fn=own)
    np.testing.assert_allclose(mean, exact * (n - 1) / n, atol=2e-5, rtol=1e-4)
    assert not np.allclose(mean, exact, atol=1e-3)


def test_std_normalisation_changes_the_expectation():
    """Dividing by the per-image std is not an unbiased estimator of ∇E[R] (why it is off)."""
    theta = init_theta(2)
    cfg = RLConfig(num_samples=3, normalize_std=True)
    mean, _ = estimator_moments(theta, REWARDS, cfg, 3)
    assert not np.allclose(mean, exact_gradient(theta, REWARDS), atol=1e-2)


@pytest.mark.parametrize("shift, helps", [(5.0, True), (None, False)])
def test_leave_one_out_variance(shift, helps):
    """Exact variances of the N-sample estimators, and when the leave-one-out baseline helps.

    With s = ∇θ log p(y), μ = E[R], σ² = Var[R], g = E[R s] and C = Cov(R, ‖s‖²), the trace of
    the covariance of the mean of N terms is

      no baseline:   (E[R²‖s‖²] − ‖g‖²) / N
      leave-one-out: (N·(E[R²‖s‖²] − 2μE[R‖s‖²] + (μ² + σ²/(N−1))E‖s‖²)
                      + N(N−1)‖g‖²(1 + 1/(N−1)²)) / N² − ‖g‖²

    so the leave-one-out baseline lowers the variance exactly when

      μ²·E‖s‖² + 2μ·C  >  (σ²·E‖s‖² + ‖g‖²) / (N − 1),

    i.e. roughly when the squared mean reward exceeds the reward variance divided by N − 1:
    rewards far from zero (all positive here after a shift of +5) gain a lot; rewards already
    centred (μ = 0, the ``None`` case: R − E_p[R]) lose, since the baseline only adds noise.
    The one-sample (released) form is worse than leave-one-out at the same N: it trains on one
    sample where leave-one-out trains on all N.
    """
    n = 3
    theta = init_theta(3)
    p = jnp.exp(token_logp(theta, SEQS).sum(-1))
    rewards = REWARDS + shift if shift is not None else REWARDS - p @ REWARDS
    st = single_sample_stats(theta, rewards)
    _, var_none = estimator_moments(theta, rewards, RLConfig(num_samples=n, baseline="none"), n)
    _, var_loo = estimator_moments(theta, rewards, RLConfig(num_samples=n), n)
    _, var_one = estimator_moments(theta, rewards, RLConfig(num_samples=n, one_sample=True), n)
    # The enumeration agrees with the closed forms.
    np.testing.assert_allclose(var_none, (st["er2s2"] - st["g2"]) / n, rtol=1e-4)
    np.testing.assert_allclose(var_loo, loo_variance_formula(st, n), rtol=1e-4)
    # The stated condition predicts the outcome.
    cov = st["ers2"] - st["mu"] * st["es2"]
    condition = st["mu"] ** 2 * st["es2"] + 2 * st["mu"] * cov > (
        st["var"] * st["es2"] + st["g2"]) / (n - 1)
    assert bool(condition) == helps
    assert bool(var_loo < var_none) == helps
    if helps:
        assert var_loo < 0.2 * var_none  # the shifted reward: a large reduction
    assert var_one > var_loo


def test_advantage_shapes_and_weights():
    r = jnp.array([[1.0, 2.0, 3.0, 6.0]])
    adv, w = reinforce.advantages(r, RLConfig(num_samples=4))
    np.testing.assert_allclose(adv, [[1 - 11 / 3, 2 - 10 / 3, 3 - 3, 6 - 2]], rtol=1e-6)
    np.testing.assert_array_equal(w, 1.0)
    adv, w = reinforce.advantages(r, RLConfig(num_samples=4, one_sample=True))
    np.testing.assert_allclose(adv, [[1 - 11 / 3, 0, 0, 0]], rtol=1e-6)
    np.testing.assert_array_equal(w, [[1, 0, 0, 0]])
    # all-equal rewards: the std floor keeps normalised advantages finite (zero)
    adv, _ = reinforce.advantages(jnp.ones((2, 4)), RLConfig(num_samples=4, normalize_std=True))
    np.testing.assert_array_equal(adv, 0.0)


def test_loss_divides_by_b_times_n_and_ignores_masked_tokens():
    lp = jnp.full((2, 3, 4), -1.0)
    mask = jnp.zeros((2, 3, 4)).at[..., :2].set(1)
    adv, w = jnp.ones((2, 3)), jnp.ones((2, 3))
    assert float(reinforce.pg_loss(lp, mask, adv, w)) == pytest.approx(2.0)  # 6·2 / 6


@pytest.mark.parametrize("kw, match", [
    (dict(num_samples=1), "at least 2"), (dict(temperature=0.7), "allow_truncation"),
    (dict(top_k=5), "allow_truncation"), (dict(baseline="greedy", one_sample=True), "one_sample"),
    (dict(baseline="mean"), "baseline")])
def test_config_errors_name_the_field(kw, match):
    with pytest.raises(ValueError, match=match):
        RLConfig(**kw).validate()


def test_kl_penalty_and_entropy():
    r = jnp.zeros((1, 2))
    lp = jnp.array([[[-1.0, -2.0], [-0.5, -0.5]]])
    ref = jnp.array([[[-1.5, -2.0], [-0.5, -1.5]]])
    out = reinforce.kl_penalized(r, lp, ref, jnp.ones_like(lp), coef=0.1)
    np.testing.assert_allclose(out, [[-0.05, -0.1]], rtol=1e-6)
    uniform = jnp.log(jnp.full((1, 1, 2, 4), 0.25))
    assert float(reinforce.token_entropy(uniform, jnp.ones((1, 1, 2)))) == pytest.approx(
        np.log(4), rel=1e-6)
    assert float(reinforce.token_kl(uniform, uniform, jnp.ones((1, 1, 2)))) == pytest.approx(0.0)
