# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The two steps on a toy task: MLE, then reward tuning
#
# The paper's recipe in miniature, small enough to understand at a glance. The "image" shows
# one to four numbers, one per band of rows; the model must write them **sorted**, then EOS:
#
#     image bands 7, 2, 9   ->   2 7 9 EOS
#
# **Step 1, MLE.** Teacher forcing: at every position the model sees the *true* prefix and
# is scored on the next token alone. **Step 2, REINFORCE.** The model writes N = 8 whole
# sequences per image, each is scored by the task reward R (the fraction of positions that are
# right, so an early slip that shifts the rest costs every later position), and each sample's
# log-likelihood is pushed up or down by its advantage: R minus the mean reward of the other
# N − 1 samples of the same image (the leave-one-out baseline):
#
# $$\nabla_\theta \mathbb{E}_{y \sim p_\theta}[R(x, y)] \approx \frac{1}{N}\sum_i
#   \Big(R(x, y_i) - \frac{1}{N-1}\sum_{j \ne i} R(x, y_j)\Big)\nabla_\theta \log p_\theta(y_i|x)$$
#
# The same model, sampler, REINFORCE loss and trainer serve every task of this package
# (`rlcv_lib.core.steps`, `rlcv_lib.core.train`); the task supplies tokens, an allowed-token
# rule and a reward. MLE is stopped early here on purpose, so that tuning has something to do.

# %% tags=["parameters"]
preset = "cpu"     # smoke | cpu | gpu | paper
seed = 0
workdir = ""       # checkpoints and caches; "" -> runs/<preset>
figures_dir = ""   # "" -> figures/ for the cpu preset, <workdir>/figures otherwise
overrides = {}     # config overrides, e.g. {"toy.tune_steps": 300}

# %%
from rlcv_lib import notebook

ctx = notebook.setup("02_reward_tuning_toy", preset=preset, seed=seed, workdir=workdir,
                     figures_dir=figures_dir, overrides=overrides)
cfg = ctx.config
print(cfg.toy)

# %%
import matplotlib.pyplot as plt

from rlcv_lib.core import evaluate as ev
from rlcv_lib.core import optim, steps, train
from rlcv_lib.models import build_model
from rlcv_lib.tasks.toy import experiment as toy

task, size = toy.make_task(cfg.toy)   # tokens, allowed-token rule, reward
model = build_model(size, task, seed=ctx.seed)
evaluate, heldout = toy.make_evaluator(task, cfg.toy, ctx.seed)  # fixed held-out images

# %% [markdown]
# ## Step 1: maximum likelihood
# `steps.make_mle_step(task)` is one jitted update: teacher-forced cross-entropy of the true
# next token under the task's allowed-token rule. `train.fit` calls it once per step on
# `batch_fn(step)`, a pure function of (seed, step), and logs its metrics.

# %%
mle_cfg = toy.mle_config(cfg.toy)
mle = train.fit(model, optim.make_optimizer(model, mle_cfg), steps.make_mle_step(task),
                lambda s: task.batch(ctx.seed, s, mle_cfg.batch_size), seed=ctx.seed,
                num_steps=mle_cfg.num_steps, log_every=mle_cfg.log_every,
                progress=cfg.run.progress, desc="MLE")
before = evaluate(model)
print("after MLE:", {k: round(v, 3) for k, v in before.items()})

steps_, loss = mle.history.column("loss", kind="train")
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(steps_, loss)
ax.set(xlabel="MLE update", ylabel="token NLL (nats)", title="Step 1: maximum likelihood")
ctx.save_figure(fig, "toy_mle_curve.png")
plt.show()

# %% [markdown]
# ## Step 2: reward tuning
# `steps.make_rl_step(task, rl_cfg)` samples N sequences per image (jitted), scores them with
# the task's reward (on the host), and takes one jitted REINFORCE update with the leave-one-out
# baseline. The same `train.fit` runs it, on its own data stream (`seed_for(seed, "tune")`),
# evaluating the held-out images every few updates: by sampling (what REINFORCE maximises) and
# by greedy decoding (how the model would be used). The training reward is the mean over the N
# samples of each tuning batch.

# %%
tune_cfg, tune_seed = toy.tune_config(cfg.toy), ev.seed_for(ctx.seed, "tune")
tuned = train.fit(model, optim.make_optimizer(model, tune_cfg),
                  steps.make_rl_step(task, toy.rl_config(cfg.toy)),
                  lambda s: task.batch(tune_seed, s, tune_cfg.batch_size), seed=tune_seed,
                  num_steps=tune_cfg.num_steps, log_every=tune_cfg.log_every,
                  eval_fn=lambda m, step: evaluate(m), eval_every=cfg.toy.eval_every,
                  eval_at_start=True, progress=cfg.run.progress, desc="REINFORCE")
after = evaluate(model)

tune = tuned.history
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(*tune.column("reward_mean", kind="train"), alpha=0.5, label="train batches (sampled)")
ax.plot(*tune.column("sampled_reward", kind="eval"), "o-", label="held-out, sampled")
ax.plot(*tune.column("greedy_reward", kind="eval"), "s-", label="held-out, greedy")
ax.set(xlabel="REINFORCE update", ylabel="reward (fraction of positions right)",
       title="Step 2: reward tuning")
ax.legend()
ctx.save_figure(fig, "toy_reward_curve.png")
plt.show()

# %% [markdown]
# ## Before and after, on the same held-out images

# %%
rows = [{"decoding": k.split("_")[0], "metric": k, "MLE": before[k],
         "tuned": after[k], "change": after[k] - before[k]}
        for k in ("sampled_reward", "greedy_reward", "greedy_exact")]
ctx.save_table("toy_before_after", rows)
for r in rows:
    print(f"{r['metric']:15s} MLE {r['MLE']:.3f} -> tuned {r['tuned']:.3f} "
          f"({r['change']:+.3f})")
for k in ("sampled_reward", "greedy_reward", "greedy_exact"):
    ctx.record("toy", k, mle=before[k], tuned=after[k])

# %% [markdown]
# REINFORCE maximises the expected reward of the model's own samples, so that is the number
# that must rise. The greedy decode is a different quantity: it may follow, or not, and the
# paper's tasks evaluate greedy decodes, which is why each task notebook reports both.
# A few held-out images with the greedy output after tuning:

# %%
tokens = ev.decode(model, task, heldout["image"][:4])
fig, axes = plt.subplots(1, 4, figsize=(8, 2.6))
for i, ax in enumerate(axes):
    example = {"image": heldout["image"][i],
               "values": heldout["values"][i][heldout["values"][i] >= 0]}
    task.draw(example, task.detokenize(tokens[i]), ax=ax)
ctx.save_figure(fig, "toy_examples.png")
plt.show()

# %%
ctx.finish()
