"""REINFORCE with baselines (docs/design.md §8.2): advantages and the policy-gradient loss.

∇θ E_y[R(y)] = E_y[(R(y) − b) ∇θ log p(y)] for any baseline b that does not depend on y.
Per image we draw N samples y_1..y_N and use:

* ``baseline="loo"`` (default): b_i = mean of the *other* N−1 rewards; every sample carries
  the gradient (RLOO). Unbiased because b_i is independent of y_i.
* ``one_sample=True`` (the released big_vision form, ``paper_compat``): only sample 0 carries
  the gradient, its baseline is the mean of samples 1..N−1.
* ``baseline="greedy"`` (self-critical): b = reward of the greedy decode of the same image.
* ``baseline="none"``: b = 0.

Optional, both off by default: dividing advantages by the per-image reward std (floored, since
all-equal rewards would divide by 0; note this rescales the gradient per image, so the
estimator is no longer an unbiased gradient of E[R]), and a KL penalty to the initial model
folded into the reward (R − β Σ_t (log p − log p_ref)).

Loss = −Σ_{samples} w·A · Σ_{non-pad t} log p(y_t | y_<t, image) / Σ w with w the per-sample
weight (1 for every sample: the divisor is B·N; one-sample form: the divisor is B).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class RLConfig:
    """Reward tuning: samples, baseline, optional normalisation/KL, sampling protocol."""

    num_samples: int = 8
    """N samples per image."""
    baseline: Literal["loo", "greedy", "none"] = "loo"
    """Baseline of each sample's advantage (see the module docstring)."""
    one_sample: bool = False
    """The released form (paper_compat): gradient on one sample, baseline = mean of the others."""
    normalize_std: bool = False
    """Divide advantages by the per-image reward std (floored by ``std_floor``). Off: biased."""
    std_floor: float = 0.1
    """Floor of that std (all-equal rewards would otherwise blow advantages up)."""
    kl_coef: float = 0.0
    """β of the KL penalty to the initial model, folded into the reward (0: off)."""
    aux_weight: float = 1.0
    """Weight of the task's auxiliary loss (e.g. detection's confidence loss), if it has one."""
    temperature: float = 1.0
    """Sampling temperature; anything but 1 needs ``allow_truncation`` (it biases REINFORCE)."""
    top_k: int = 0
    """Top-k truncation while tuning (0: off); needs ``allow_truncation``."""
    top_p: float = 1.0
    """Nucleus truncation while tuning (1: off); needs ``allow_truncation``."""
    allow_truncation: bool = False
    """Explicit opt-in to temperature ≠ 1 or truncation during tuning (docs/design.md §8.1)."""
    unroll: int = 1
    """``scan`` unroll of the sampler loop (a speed knob, see benchmarks/bench_sampler.py)."""
    device_reward: bool = False
    """Compute the reward in JAX on the device, jitted, from the sampled tokens without a host
    round trip (the task's ``device_reward``, e.g. detection's); off: the task's NumPy
    ``reward`` on the host, its test oracle."""

    def validate(self) -> None:
        """Raises ValueError naming the bad field."""
        if self.baseline not in ("loo", "greedy", "none"):
            raise ValueError(f"baseline={self.baseline!r}: choose 'loo', 'greedy' or 'none'")
        if self.num_samples < 1:
            raise ValueError(f"num_samples={self.num_samples} must be ≥ 1")
        if (self.baseline == "loo" or self.one_sample) and self.num_samples < 2:
            raise ValueError(f"num_samples={self.num_samples}: the leave-one-out/one-sample "
                             "baselines need at least 2 samples per image")
        if self.one_sample and self.baseline != "loo":
            raise ValueError(f"one_sample=True uses the mean of the others as baseline; "
                             f"baseline={self.baseline!r} does not apply")
        if self.std_floor <= 0:
            raise ValueError(f"std_floor={self.std_floor} must be > 0")
        truncating = self.temperature != 1.0 or self.top_k or self.top_p < 1.0
        if truncating and not self.allow_truncation:
            raise ValueError(f"temperature={self.temperature}, top_k={self.top_k}, "
                             f"top_p={self.top_p} bias REINFORCE; set allow_truncation=True "
                             "to tune with them anyway")


RL_PRESETS: dict[str, RLConfig] = {
    "smoke": RLConfig(num_samples=4),
    "cpu": RLConfig(num_samples=8),
    "gpu": RLConfig(num_samples=8),
    "paper": RLConfig(num_samples=8),
}


def advantages(rewards: jax.Array, cfg: RLConfig,
               greedy_rewards: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """(advantages [B,N], per-sample gradient weights [B,N]) for ``rewards`` [B,N]."""
    b, n = rewards.shape
    weights = jnp.ones_like(rewards)
    if cfg.one_sample:
        adv = rewards - jnp.mean(rewards[:, 1:], axis=1, keepdims=True)
        weights = weights.at[:, 1:].set(0.0)
    elif cfg.baseline == "loo":
        adv = rewards - (rewards.sum(1, keepdims=True) - rewards) / (n - 1)
    elif cfg.baseline == "greedy":
        if greedy_rewards is None:
            raise ValueError("baseline='greedy' needs greedy_rewards [B]")
        adv = rewards - greedy_rewards[:, None]
    else:
        adv = rewards
    if cfg.normalize_std:
        adv = adv / jnp.maximum(jnp.std(rewards, axis=1, keepdims=True), cfg.std_floor)
    return adv * weights, weights


def kl_penalized(rewards: jax.Array, logprobs: jax.Array, ref_logprobs: jax.Array,
                 mask: jax.Array, coef: float) -> jax.Array:
    """R − β Σ_t (log p − log p_ref) over valid tokens: [B,N] (a single-sample KL estimate)."""
    return rewards - coef * jnp.sum((logprobs - ref_logprobs) * mask, axis=-1)


def pg_loss(logprobs: jax.Array, mask: jax.Array, adv: jax.Array,
            weights: jax.Array) -> jax.Array:
    """−Σ w·A·Σ_t log p / Σ w: ``logprobs``/``mask`` [B,N,L], ``adv``/``weights`` [B,N].
    Advantages are constants (no gradient flows through them)."""
    seq_logp = jnp.sum(logprobs * mask, axis=-1)  # [B,N]
    adv = jax.lax.stop_gradient(adv)
    return -jnp.sum(adv * seq_logp) / jnp.maximum(jnp.sum(weights), 1.0)


def token_entropy(log_softmax: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean entropy (nats) per valid token of the masked distributions [...,L,V]."""
    p = jnp.exp(log_softmax)
    ent = -jnp.sum(jnp.where(p > 0, p * log_softmax, 0.0), axis=-1)
    return jnp.sum(ent * mask) / jnp.maximum(jnp.sum(mask), 1)


def token_kl(log_softmax: jax.Array, ref_log_softmax: jax.Array, mask: jax.Array) -> jax.Array:
    """Exact per-position KL(p‖p_ref) summed over valid tokens, averaged over sequences."""
    p = jnp.exp(log_softmax)
    kl = jnp.sum(jnp.where(p > 0, p * (log_softmax - ref_log_softmax), 0.0), axis=-1)
    per_seq = jnp.sum(kl * mask, axis=-1)
    return jnp.mean(per_seq)
