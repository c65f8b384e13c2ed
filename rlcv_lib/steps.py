"""MLE and reward-tuning (REINFORCE) step functions: the contract the trainer codes against.

Interface (stable; the trainer in ``rlcv_lib/train.py`` relies on exactly this)::

    from rlcv_lib import steps
    from rlcv_lib.models import build_model, MODEL_PRESETS
    from rlcv_lib.reinforce import RL_PRESETS

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
* Both steps update ``model`` and ``optimizer`` in place (``nnx.jit`` inside). The RL step runs
  the jitted sampler, then the task's reward on the host (NumPy), then the jitted update: the
  metrics it returns are already on the host side of that sync.
* Metrics are jax scalars (no host sync in the MLE step); a NaN/inf ``loss`` is the trainer's
  to detect.
* ``make_eval_fn(task, method="greedy")`` -> ``fn(model, batch) -> tokens int32 [B,L]``.
* ``make_kl_fn(task, rl_cfg)`` -> ``fn(model, ref_model, batch, rng) -> jax scalar``: the KL to
  a reference (initial) model, for evaluation intervals.
"""
