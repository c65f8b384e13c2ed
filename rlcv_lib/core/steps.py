"""MLE and reward-tuning (REINFORCE) step functions: the contract the trainer codes against.

Interface (stable; the trainer in ``rlcv_lib/train.py`` relies on exactly this)::

    from rlcv_lib.core import steps
    from rlcv_lib.models import build_model, MODEL_PRESETS
    from rlcv_lib.core.reinforce import RL_PRESETS

    model = build_model(MODEL_PRESETS["cpu"], task, seed=0)     # nnx.Module
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)          # flax 0.12

    mle_step = steps.make_mle_step(task, model_cfg, rl_cfg=None)
    rl_step = steps.make_rl_step(task, rl_cfg)
    metrics = mle_step(model, optimizer, batch, rng)   # dict[str, jax scalar]; "loss", ...
    metrics = rl_step(model, optimizer, batch, rng)    # "loss", "reward_mean", "reward_std",
                                                       # "adv_mean", "adv_std", "entropy",
                                                       # "sample_len", ...

* ``batch``: dict of arrays; ``"image"`` float32 [B,H,W,3] always, ``"tokens"`` int32 [B,L]
  for MLE (``task.tokenize`` of each example); any other keys are passed to ``task.reward``.
* ``rng``: a ``jax.random.key``; the RL step samples with it (the MLE step has no dropout and
  ignores it). Data order and rng are the caller's: pure functions of (seed, step).
* **One pure step.** Each step has ``step.functional(model, optimizer) -> FunctionalStep(state,
  step, sync)``: ``state`` is a private copy of the flat state of ``(model, optimizer)``
  (:mod:`rlcv_lib.core.split_state`: trained parameters and optimizer state, the model holding
  nothing else), ``step(state, batch, rng) -> (state, metrics)`` is jitted and **donates**
  ``state`` (its buffers are reused for the new state), and ``sync(state) -> state`` writes a
  state into the live objects and returns a fresh copy to continue from, so the live objects'
  arrays are never donated (a model cloned before training keeps its arrays). ``train.fit``
  runs this form. The task's frozen pytree (``task.frozen``) and the KL reference model are
  arguments of the jitted parts, never donated nor closed over.
* Calling ``step(model, optimizer, batch, rng) -> metrics`` updates the objects in place (the
  notebooks' simple call): the same update, without donation. The RL step runs the jitted
  sampler, then the task's reward on the host (NumPy), then the jitted update: the metrics it
  returns are already on the host side of that sync.
* Metrics are jax scalars (no host sync in the MLE step); a NaN/inf ``loss`` is the trainer's
  to detect.
* ``make_rl_step(task, rl_cfg, ref_model=initial_model)``: with ``rl_cfg.kl_coef > 0`` pass
  the initial model when resuming (default: a copy of the model at the first call).
* ``make_eval_fn(task, method="greedy")`` -> ``fn(model, batch) -> tokens int32 [B,L]``.
* ``make_sample_fn(task, rl_cfg, **overrides)`` -> ``fn(model, images, rng) -> SampleOutput``.
* ``make_kl_fn(task, rl_cfg)`` -> ``fn(model, ref_model, batch, rng) -> jax scalar``: the KL to
  a reference (initial) model, for evaluation intervals.
* The jitted pieces are the module-level ``sampling.sample_jit`` / ``greedy_jit`` /
  ``teacher_forced_jit`` (static ``DecodeSpec``), so steps and helpers made twice for the same
  task share their compilations.

Measured on the 2-core CPU (``python benchmarks/bench_sampler.py --steps --length 108``, cpu
preset, vocab 100, L=108): MLE step at B=32 0.34 s; RL step at B=16×N=8 1.26 s (sampling 0.46 s,
update 0.81 s).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from rlcv_lib.core import reinforce, sampling, split_state
from rlcv_lib.core import task as base
from rlcv_lib.core.reinforce import RLConfig

Metrics = dict[str, jax.Array]


def _check_model(model: nnx.Module, task: Any) -> None:
    cfg = model.cfg
    if cfg.vocab_size != task.vocab_size or cfg.max_len != task.max_len:
        raise ValueError(f"model (vocab_size={cfg.vocab_size}, max_len={cfg.max_len}) does not "
                         f"fit task {task.name!r} (vocab_size={task.vocab_size}, "
                         f"max_len={task.max_len}); build it with models.build_model(cfg, task)")


def _batch_arrays(batch: dict, *keys: str) -> list[jax.Array]:
    missing = [k for k in keys if k not in batch]
    if missing:
        raise KeyError(f"batch lacks {missing}; it has {sorted(batch)}")
    return [jnp.asarray(batch[k]) for k in keys]


class FunctionalStep(NamedTuple):
    """A step's pure form over the flat state of ``(model, optimizer)`` (module docstring):
    ``step(state, batch, rng) -> (state, metrics)`` donates ``state``; ``sync(state)`` writes a
    state into the live objects and returns a fresh copy of it to continue from."""

    state: list[jax.Array]
    step: Callable[[list[jax.Array], Any, Any], tuple[list[jax.Array], Metrics]]
    sync: Callable[[list[jax.Array]], list[jax.Array]]


_copy = jax.jit(lambda leaves: [jnp.copy(x) for x in leaves])
"""A fresh copy of a flat state (one jitted call: ten times cheaper than a copy per leaf)."""


def _pure(model, optimizer, make_step: Callable[[split_state.Structure, bool], Callable]
          ) -> FunctionalStep:
    """The :class:`FunctionalStep` of ``make_step(structure, donate=True)``."""
    structure, leaves = split_state.split((model, optimizer))

    def sync(state):
        split_state.write_back((model, optimizer), structure, state)
        return _copy(state)

    return FunctionalStep(_copy(leaves), make_step(structure, True), sync)


def _in_place(model, optimizer, make_step, batch, rng) -> Metrics:
    """One update of the live objects by ``make_step(structure, donate=False)``."""
    structure, leaves = split_state.split((model, optimizer))
    new, metrics = make_step(structure, False)(leaves, batch, rng)
    split_state.write_back((model, optimizer), structure, new)
    return metrics


# ---------------------------------------------------------------------------------------------
# MLE


def mle_loss(model: nnx.Module, images: jax.Array, tokens: jax.Array,
             spec: sampling.DecodeSpec) -> tuple[jax.Array, Metrics]:
    """Teacher-forced cross-entropy under the task's mask, mean over valid target tokens
    (up to and including EOS). ``tokens`` [B,L]."""
    tf = sampling.teacher_forced(model, images, tokens[:, None], spec)
    n_tok = jnp.maximum(tf.valid.sum(), 1)
    loss = -tf.logprobs.sum() / n_tok
    correct = (jnp.argmax(tf.log_softmax, -1) == tokens[:, None]) & tf.valid
    disallowed = jnp.sum(jnp.isneginf(tf.logprobs))  # targets the mask forbids: a task bug
    return loss, {"token_acc": correct.sum() / n_tok, "target_disallowed": disallowed}


def make_mle_step(task: Any, model_cfg: Any = None, rl_cfg: RLConfig | None = None):
    """``step(model, optimizer, batch, rng) -> metrics`` for maximum likelihood.

    ``model_cfg``/``rl_cfg`` are accepted for a uniform signature; the MLE loss needs neither
    (no dropout; temperature 1 under the task's mask, as in sampling)."""
    base.check_task(task)
    spec = sampling.DecodeSpec.for_task(task)

    def update_in_place(model, optimizer, images, tokens):
        grad_fn = nnx.value_and_grad(lambda m: mle_loss(m, images, tokens, spec), has_aux=True)
        (loss, metrics), grads = grad_fn(model)
        optimizer.update(model, grads)
        return {"loss": loss, "grad_norm": optax.global_norm(grads), **metrics}

    def arrays(batch, rng=None):
        images, tokens = _batch_arrays(batch, "image", "tokens")
        return images, tokens.astype(jnp.int32)

    return update_step(update_in_place, arrays, check=lambda model: _check_model(model, task))


def update_step(update_in_place: Callable[..., Metrics],
                arrays: Callable[[Any, Any], tuple[Any, ...]],
                check: Callable[[nnx.Module], None] | None = None):
    """``step(model, optimizer, batch, rng) -> metrics`` with its pure form ``step.functional``
    (module docstring) for an update ``update_in_place(model, optimizer, *arrays(batch, rng))``
    that mutates the objects and returns metrics; ``check(model)`` runs before either form
    (e.g. refusing a model built for another task). The MLE step and UViM's stage I step are
    both made here."""
    updates = {donate: split_state.jit_over_leaves(update_in_place, returns_state=True,
                                                   donate=donate) for donate in (True, False)}

    def make_step(structure, donate):
        pure = updates[donate](structure)
        return lambda state, batch, rng=None: pure(state, *arrays(batch, rng))

    in_place = nnx.jit(update_in_place)  # the same update on the live objects

    def step(model, optimizer, batch, rng=None) -> Metrics:
        if check is not None:
            check(model)
        return in_place(model, optimizer, *arrays(batch, rng))

    def functional(model, optimizer) -> FunctionalStep:
        if check is not None:
            check(model)
        return _pure(model, optimizer, make_step)

    step.functional = functional
    return step


# ---------------------------------------------------------------------------------------------
# Reward tuning


def rl_spec(task: Any, rl_cfg: RLConfig) -> sampling.DecodeSpec:
    """The sampling protocol of reward tuning (docs/design.md §8.1)."""
    return sampling.DecodeSpec.for_task(
        task, num_samples=rl_cfg.num_samples, temperature=rl_cfg.temperature,
        top_k=rl_cfg.top_k, top_p=rl_cfg.top_p, unroll=rl_cfg.unroll)


def rl_loss(model, images, tokens, adv, weights, aux, spec, task, rl_cfg):
    """REINFORCE loss (+ the task's auxiliary loss) of samples ``tokens`` [B,N,L]."""
    tf = sampling.teacher_forced(model, images, tokens, spec)
    mask = tf.valid
    pmask = base.policy_mask(task, tokens)
    if pmask is not None:
        mask = mask & pmask
    pg = reinforce.pg_loss(tf.logprobs, mask, adv, weights)
    extra = base.aux_loss(task, tf.log_softmax, tokens, aux)
    aux_l = jnp.zeros(()) if extra is None else extra
    metrics = {"pg_loss": pg, "aux_loss": aux_l,
               "entropy": reinforce.token_entropy(tf.log_softmax, tf.valid)}
    return pg + rl_cfg.aux_weight * aux_l, metrics


def make_rl_step(task: Any, rl_cfg: RLConfig, *, ref_model: nnx.Module | None = None):
    """``step(model, optimizer, batch, rng) -> metrics`` for REINFORCE.

    Jitted sampling (N per image, image encoded once) -> the reward (the task's NumPy ``reward``
    on the host, or with ``rl_cfg.device_reward`` its jitted ``device_reward`` on the device) ->
    jitted advantages, loss and update. With ``rl_cfg.kl_coef > 0`` the KL penalty is to
    ``ref_model`` (pass the initial model when resuming), by default a copy of the model taken
    at the first call. Metrics: ``loss`` (REINFORCE + weighted aux), ``pg_loss``, ``aux_loss``,
    ``reward_mean``, ``reward_std`` (over all B·N samples), ``reward_std_within`` (mean over
    images of the std of its N rewards: what a leave-one-out baseline can use), ``adv_mean``,
    ``adv_std`` (over the samples that carry gradient), ``entropy`` (nats per valid token),
    ``sample_len``, ``grad_norm``, the reward's scalar auxiliaries, and ``kl_sample`` with a KL
    penalty."""
    base.check_task(task)
    rl_cfg.validate()
    if rl_cfg.device_reward and not hasattr(task, "device_reward"):
        raise ValueError(f"rl.device_reward=True, but task {task.name!r} has no device_reward "
                         f"(a jax.numpy form of its reward); set rl.device_reward=False")
    spec = rl_spec(task, rl_cfg)
    ref: dict[str, Any] = {} if ref_model is None else {"model": ref_model}
    reward = _device_reward(task) if rl_cfg.device_reward else _host_reward(task)

    def update_in_place(model, optimizer, images, tokens, lengths, rewards, greedy_rewards, aux,
                        sample_logp, ref_logp):
        if rl_cfg.kl_coef:
            valid = sampling.valid_mask(tokens, spec.eos_id)
            rewards = reinforce.kl_penalized(rewards, sample_logp, ref_logp, valid,
                                             rl_cfg.kl_coef)
        adv, weights = reinforce.advantages(rewards, rl_cfg, greedy_rewards)
        grad_fn = nnx.value_and_grad(
            lambda m: rl_loss(m, images, tokens, adv, weights, aux, spec, task, rl_cfg),
            has_aux=True)
        (loss, metrics), grads = grad_fn(model)
        optimizer.update(model, grads)
        trained = weights > 0
        adv_t = jnp.where(trained, adv, 0.0)
        n_t = jnp.maximum(trained.sum(), 1)
        adv_mean = adv_t.sum() / n_t
        adv_std = jnp.sqrt(jnp.sum(jnp.where(trained, (adv - adv_mean) ** 2, 0.0)) / n_t)
        return {"loss": loss, "grad_norm": optax.global_norm(grads), "adv_mean": adv_mean,
                "adv_std": adv_std, "sample_len": lengths.mean(), **metrics}

    updates = {donate: split_state.jit_over_leaves(update_in_place, returns_state=True,
                                                   donate=donate) for donate in (True, False)}
    sample_leaves = split_state.jit_over_leaves(
        lambda m, o, x, r: sampling.sample(m, x, r, spec), returns_state=False)
    greedy_leaves = split_state.jit_over_leaves(
        lambda m, o, x: sampling.greedy(m, x, spec), returns_state=False)
    ref_leaves = split_state.jit_over_leaves(
        lambda m, x, t: sampling.teacher_forced(m, x, t, spec).logprobs, returns_state=False)

    def make_step(structure, donate):
        """``step(state, batch, rng) -> (state, metrics)``: sampling and the greedy baseline
        read ``state``; the reward runs on the host; the update (donating ``state`` when
        ``donate``) returns the new state."""
        sample, greedy = sample_leaves(structure), greedy_leaves(structure)
        update = updates[donate](structure)

        def pure_step(state, batch, rng):
            (images,) = _batch_arrays(batch, "image")
            out = sample(state, images, rng)
            rewards, aux = reward(out.tokens, batch)
            scalars = {k: v for k, v in aux.items() if np.ndim(v) == 0}
            arrays = {k: v for k, v in aux.items() if np.ndim(v) > 0}
            greedy_r = None
            if rl_cfg.baseline == "greedy":
                greedy_r = reward(greedy(state, images).tokens, batch)[0][:, 0]
            ref_logp = None
            if rl_cfg.kl_coef:  # the reference model's state is an argument, never donated
                ref_structure, ref_state = ref["split"]
                ref_logp = ref_leaves(ref_structure)(ref_state, images, out.tokens)
            state, metrics = update(state, images, out.tokens, out.lengths, rewards, greedy_r,
                                    arrays, out.logprobs, ref_logp)
            metrics.update(reward_mean=rewards.mean(), reward_std=rewards.std(),
                           reward_std_within=rewards.std(axis=1).mean(), **scalars)
            if rl_cfg.kl_coef:
                valid = np.asarray(sampling.valid_mask(out.tokens, spec.eos_id))
                kl = np.sum((np.asarray(out.logprobs) - np.asarray(ref_logp)) * valid,
                            -1).mean()
                metrics["kl_sample"] = jnp.asarray(kl)
            return state, metrics

        return pure_step

    def prepare(model) -> None:
        _check_model(model, task)
        if rl_cfg.kl_coef and "split" not in ref:
            ref["split"] = split_state.split(ref["model"] if "model" in ref else
                                             nnx.clone(model))

    def step(model, optimizer, batch, rng) -> Metrics:
        prepare(model)
        return _in_place(model, optimizer, make_step, batch, rng)

    def functional(model, optimizer) -> FunctionalStep:
        prepare(model)
        return _pure(model, optimizer, make_step)

    step.functional = functional
    step.update = updates[False]  # structure -> the jitted update alone (abstract tracing)
    return step


def _checked_rewards(task: Any, rewards: Any, tokens: Any) -> None:
    if rewards.shape != tokens.shape[:2]:
        raise ValueError(f"{task.name}'s reward returned shape {rewards.shape}, expected "
                         f"{tokens.shape[:2]} (B, N)")


def _host_reward(task: Any):
    """``reward(tokens, batch) -> (rewards [B,N], aux)`` on the device: the task's NumPy
    ``reward`` on the host (tokens fetched, rewards and auxiliaries put back)."""

    def reward(tokens, batch):
        tokens = np.asarray(tokens)
        rewards, aux = task.reward(tokens, batch, task.frozen)
        rewards = jnp.asarray(np.asarray(rewards, np.float32))
        _checked_rewards(task, rewards, tokens)
        return rewards, {k: jnp.asarray(v) for k, v in aux.items()}

    return reward


def _device_reward(task: Any):
    """The same with the task's ``device_reward`` jitted: tokens stay on the device."""
    fn = jax.jit(task.device_reward)
    keys = tuple(getattr(task, "device_reward_keys", ()))

    def reward(tokens, batch):
        missing = [k for k in keys if k not in batch]
        if missing:
            raise KeyError(f"{task.name}'s device_reward needs batch{missing}; batch has "
                           f"{sorted(batch)}")
        rewards, aux = fn(tokens, {k: jnp.asarray(batch[k]) for k in keys}, task.frozen)
        _checked_rewards(task, rewards, tokens)
        return rewards.astype(jnp.float32), aux

    return reward


# ---------------------------------------------------------------------------------------------
# Evaluation helpers


def make_eval_fn(task: Any, method: str = "greedy", beam_size: int = 4,
                 spec: sampling.DecodeSpec | None = None):
    """``fn(model, batch) -> tokens int32 [B,L]``: the decode rule shared by MLE and tuned
    models (greedy under the task's mask, or the best beam); ``spec`` replaces the task's own
    decoding settings (e.g. a stricter allowed-token rule)."""
    spec = sampling.DecodeSpec.for_task(task) if spec is None else spec
    if method == "greedy":
        fn = lambda m, x: sampling.greedy_jit(m, x, spec).tokens[:, 0]  # noqa: E731
    elif method == "beam":
        fn = lambda m, x: sampling.beam_search_jit(m, x, spec, beam_size).tokens[:, 0]  # noqa: E731
    else:
        raise ValueError(f"method={method!r}: choose 'greedy' or 'beam'")

    def eval_fn(model, batch):
        _check_model(model, task)
        return fn(model, _batch_arrays(batch, "image")[0])

    return eval_fn


def make_sample_fn(task: Any, rl_cfg: RLConfig | None = None, **spec_overrides):
    """``fn(model, images, rng) -> SampleOutput`` with the RL protocol (or overrides, e.g.
    ``top_p=0.9`` for pix2seq-style nucleus decoding)."""
    spec = rl_spec(task, rl_cfg or RLConfig(num_samples=1, baseline="none"))
    spec = dataclasses.replace(spec, **spec_overrides)
    return lambda model, images, rng: sampling.sample_jit(model, images, rng, spec)


def make_kl_fn(task: Any, rl_cfg: RLConfig):
    """``fn(model, ref_model, batch, rng) -> KL`` (nats per sequence): exact per-position
    KL(model ‖ ref) along N sequences sampled from ``model``, summed over valid positions."""
    spec = rl_spec(task, rl_cfg)

    @nnx.jit
    def kl(model, ref_model, images, rng):
        out = sampling.sample(model, images, rng, spec)
        p = sampling.teacher_forced(model, images, out.tokens, spec)
        q = sampling.teacher_forced(ref_model, images, out.tokens, spec)
        return reinforce.token_kl(p.log_softmax, q.log_softmax, p.valid)

    def kl_fn(model, ref_model, batch, rng):
        return kl(model, ref_model, _batch_arrays(batch, "image")[0], rng)

    return kl_fn
