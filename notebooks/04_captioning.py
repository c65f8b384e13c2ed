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
# # Image captioning: tuning a captioner with its own metric, CIDEr-D
#
# The paper's captioning experiment on the scenes world. A captioner trained by maximum
# likelihood (MLE) learns to predict the next word of a reference caption; it is then tuned
# with REINFORCE to maximise **CIDEr-D**, the metric it is judged by: the tf-idf weighted n-gram
# (n = 1..4) agreement of a caption with the image's five reference captions, with a length
# penalty. The reward is computed for every sampled caption
# (`rlcv_lib.tasks.captioning.reward`, equal to pycocoevalcap's scorer, with document
# frequencies fixed from the training references).
#
# Two baselines for the advantage of each sampled caption are compared, on copies of the same
# MLE model, with the same batches and the same N samples per image:
#
# * **leave-one-out (LOO, the paper's)**: a sample's reward minus the mean reward of the image's
#   other N − 1 samples;
# * **self-critical (SCST, Rennie et al. 2017)**: a sample's reward minus the reward of the
#   image's *greedy* caption, the standard baseline of captioning papers.
#
# Two more models make the comparison fair: **MLE as long** (the MLE model trained on by MLE
# for as many seconds of updates as the leave-one-out tuning took: is tuning better than
# training more?) and **LOO, grounded** (leave-one-out with the reward CIDEr-D +
# `captioning.grounded_run_weight` × the grounded judge's object F1 of the caption: a reward a
# template cannot win).
#
# Everything is scored on held-out scenes: checkpoints are chosen on the validation split,
# numbers are reported on the test split, every model decoded by the same rules (greedy, and
# beam search) and judged twice: by pycocoevalcap (agreement with the references' wording) and
# by the **grounded judge** (`rlcv_lib.tasks.captioning.judge`: what the caption claims about
# the objects, checked against the scene the image was drawn from).

# %% tags=["parameters"]
preset = "cpu"     # smoke | cpu | gpu | paper
seed = 0
workdir = ""       # checkpoints and caches; "" -> runs/<preset>
figures_dir = ""   # "" -> figures/ for the cpu preset, <workdir>/figures otherwise
overrides = {}     # config overrides, e.g. {"tune.num_steps": 600}

# %%
from rlcv_lib import notebook

ctx = notebook.setup("04_captioning", preset=preset, seed=seed, workdir=workdir,
                     figures_dir=figures_dir, overrides=overrides)

# %%
import time

import jax
import matplotlib.pyplot as plt

from rlcv_lib.core import evaluate as ev
from rlcv_lib.core import shipped
from rlcv_lib.tasks.captioning import figures as cfig
from rlcv_lib.tasks.captioning import judge
from rlcv_lib.tasks.captioning import metrics as cm
from rlcv_lib.tasks.captioning import pretrain as cp
from rlcv_lib.tasks.captioning import tune as ct

cfg = ctx.config  # resolved for captioning: its `captioning` section holds the tuning knobs
dirs = ct.run_dirs(ctx.workdir)
cache = str(dirs["cache"])
print("tuning:", cfg.tune)
print("REINFORCE:", cfg.rl)
print("captioning:", cfg.captioning)

# %% [markdown]
# ## 1. The MLE captioner
# The paper tunes models that were pretrained elsewhere; this package ships its cpu preset's MLE
# captioner (`make pretrain`, `checkpoints/captioning-cpu`). Without a shipped checkpoint (or
# with `run.from_scratch`) it is trained here. Its MLE started from the package's shared scenes
# encoder (`model.encoder_init="shipped"`, docs/design.md §4.3), pretrained to name each patch's
# category, shape and colour: from random weights the captioner hardly learns to tell shapes
# apart on a CPU budget (the wrong-image control below measures it). Its validation
# curve: pycocoevalcap's CIDEr-D of greedy captions, and the reward (the same metric with
# training-set document frequencies).

# %%
t0 = time.time()
pre = shipped.load_or_pretrain(cp.RECIPE, cfg, dirs["mle"], cache_dir=cache,
                               progress=cfg.run.progress)
task = pre.task
print(f"MLE model: {pre.source}" + (f" from {pre.path}" if pre.path else "")
      + f", {pre.manifest.get('steps')} steps, {pre.manifest.get('train_seconds', 0):.0f} s of "
      f"training; loaded/trained here in {time.time() - t0:.0f} s; encoder from "
      f"{pre.encoder_start}")

fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
axes[0].plot(*pre.history.column("loss", kind="train"))
axes[0].set(xlabel="MLE update", ylabel="token NLL (nats)", title="MLE training loss")
for key in ("CIDEr-D", "reward"):
    axes[1].plot(*pre.history.column(key, kind="eval"), "o-", label=key)
axes[1].set(xlabel="MLE update", ylabel="greedy captions, validation",
            title="MLE validation curve")
axes[1].legend()
ctx.save_figure(fig, "captioning_mle_curve.png")
plt.show()

# %% [markdown]
# **Does the model look at the image?** The wrong-image control (docs/design.md §8.4): the
# model's loss on
# each image's first reference, per word class, with the true image and with another scene's
# image. A reward can only improve what the model can see: words whose loss does not rise with
# the wrong image (gap ≈ 0) are guessed from language statistics alone.

# %%
control, where = pre.wrong_image_control(
    ev.load_split(cfg, "validation", cfg.captioning.val_size, cache))
control_rows = ev.control_rows(control, kind="word class", order=cp.WORD_CLASSES)
ctx.save_table("captioning_wrong_image", control_rows)
print(f"wrong-image control ({where}), NLL in nats per word:")
for r in control_rows:
    print(f"  {r['word class']:9s} true {r['NLL true image']:.3f}  wrong "
          f"{r['NLL wrong image']:.3f}  gap {r['gap']:+.3f}")

# %% [markdown]
# ## 2. Reward tuning: leave-one-out, self-critical, and leave-one-out with a grounded reward
# One call, `ct.tune_and_evaluate` (the same that `python -m rlcv_lib tune captioning cpu`
# runs). Every run starts from a copy of the MLE model. Every `tune.eval_every` updates, and
# before the first, each is evaluated on `captioning.val_size` fixed validation images: the mean
# reward of N sampled captions per image (always the same random key, so the curve shows the
# model, not sampling noise), the reward of the greedy caption, pycocoevalcap's CIDEr-D of
# the greedy captions and the grounded judge's F1 of them. The evaluation with the best
# validation `captioning.select_on` is the checkpoint kept (step 0, the MLE model itself, is a
# candidate too). Then the control is trained and every model is decoded on the test split
# (section 3).

# %%
result = ct.tune_and_evaluate(cfg, workdir=ctx.workdir, pre=pre, cache_dir=cache,
                              progress=cfg.run.progress)
runs = list(result.runs.values())
for r in runs:
    print(f"{r.name:13s} ({r.baseline} baseline): {r.seconds:.0f} s, chosen step "
          f"{r.best_step} (validation CIDEr-D {r.best_value:.4f})")
for name, info in result.control_info.items():
    print(f"{name}: {info['steps']} more MLE updates in {info['seconds']:.0f} s")

# %% [markdown]
# ### Reward, CIDEr-D and the grounded judge on validation during tuning
# The grounded run's reward includes the judge's F1, so its reward panels are on another scale
# than the other two runs'.

# %%
curve = ct.tune_curves(runs)
ctx.save_table("captioning_tuning_curve", curve)
fig, axes = plt.subplots(1, 4, figsize=(16, 3.3))
panels = [("reward_sampled", "reward of samples (what REINFORCE maximises)",
           "mean reward (CIDEr-D, training df)"),
          ("reward_greedy", "reward of greedy captions", "reward (CIDEr-D, training df)"),
          ("CIDEr-D", "CIDEr-D of greedy captions (pycocoevalcap)", "CIDEr-D"),
          ("judge_F1", "grounded object F1 of greedy captions", "F1 (%)")]
for ax, (k, title, ylabel) in zip(axes, panels, strict=True):
    for r in runs:
        ax.plot(*r.history.column(k, kind="eval"), "o-", label=r.name)
        if k == "CIDEr-D":
            ax.axvline(r.best_step, ls=":", color=ax.lines[-1].get_color())
    ax.set(xlabel="REINFORCE update", ylabel=ylabel, title=title)
    ax.title.set_fontsize(9)
    ax.legend()
fig.tight_layout()
ctx.save_figure(fig, "captioning_tuning_curves.png")
plt.show()
# pooled ("all") over the runs whose reward is CIDEr-D alone; the grounded run's reward differs
corr = ct.reward_metric_correlation([r for r in runs if r.name in ct.BASELINES])
corr |= {r.name: ct.reward_metric_correlation([r])[r.name] for r in runs
         if r.name not in ct.BASELINES}
print("Pearson r of validation reward (greedy) and CIDEr-D over the evaluations:",
      {k: round(v, 3) for k, v in corr.items()})

# %% [markdown]
# ## 3. MLE and tuned models on the test split
# The same test scenes, every model decoded greedily and by beam search, scored by
# pycocoevalcap (CIDEr-D and BLEU-4 as fractions: papers print them ×100; METEOR only where
# Java is installed). `reward` is the training-frequency CIDEr-D that tuning maximised (for
# the grounded run, the CIDEr-D part of its reward). The grounded judge's columns (percent):
# **precision** (of the objects a caption claims, the share that exist), **recall** (of the
# scene's things, the share a caption names by its shape), their **F1**, **count accuracy**
# (stated counts that are exact) and **relation accuracy** (left of, above, ... that hold),
# pooled over the split; then the claims per caption behind them, and the distinct captions
# and words per 1,000 images (template collapse). The grounded run's reward contains
# precision and recall (through F1); its count and relation accuracy are its independent
# check.

# %%
test, models, rows, decoded = result.test, result.models, result.rows, result.decoded
ctx.save_table("captioning_results", rows)
for r in rows:
    print(f"{r['model']:13s} {r['decoding']:6s} CIDEr-D {r['CIDEr-D']:.4f}  "
          f"BLEU-4 {r['BLEU-4']:.4f}  ROUGE-L {r['ROUGE-L']:.4f}  words {r['words']:.1f}  | "
          f"P {r['precision']:5.1f} R {r['recall']:5.1f} F1 {r['F1']:5.1f} count "
          f"{r['count accuracy']:5.1f} relation {r['relation accuracy']:5.1f}  distinct "
          f"captions {r['distinct captions/1000']:4.0f} words {r['distinct words/1000']:3.0f}")
gains = {(name, d): cm.relative_gain(rows, "CIDEr-D", "MLE", name, d)
         for name in ct.BASELINES for d in ("greedy", "beam")}
for (name, d), g in gains.items():
    print(f"{name} vs MLE, {d}: CIDEr-D {g:+.1%} relative")
for d in ("greedy", "beam"):
    for metric in ("CIDEr-D", "BLEU-4", "ROUGE-L"):
        pick = {r["model"]: r[metric] for r in rows if r["decoding"] == d}
        ctx.record("captioning", f"test_{metric}_{d}", mle=pick["MLE"], tuned=pick["LOO"],
                   note="tuned = leave-one-out baseline; checkpoint chosen on validation")
        ctx.record("captioning", f"scst_test_{metric}_{d}", mle=pick["MLE"], tuned=pick["SCST"],
                   note="tuned = self-critical (greedy) baseline")
    for metric in ("CIDEr-D", "precision", "recall", "F1", "count accuracy",
                   "relation accuracy", "distinct captions/1000", "distinct words/1000"):
        pick = {r["model"]: r[metric] for r in rows if r["decoding"] == d}
        for name in pick:
            if name != "MLE" and (metric != "CIDEr-D" or name not in ct.BASELINES):
                ctx.record("captioning", f"{name}: test_{metric}_{d}", mle=pick["MLE"],
                           tuned=pick[name], undefined_ok=True,
                           note="grounded judge (percent; null: nothing to rate) / collapse / "
                           "controls; checkpoint chosen on validation CIDEr-D")
print(ct.compare_baselines(rows, runs))

# %% [markdown]
# ## 4. How close to the references' own agreement?
# Each reference caption, scored by CIDEr-D against the other four of its image, measures how
# much the annotators agree with each other: the score of a captioner that writes like one more
# annotator, the "ceiling" of the issue. The models' greedy captions are scored under the same
# conditions (against four references, averaged over which one is left out), so the numbers
# compare directly. A model *can* score above it: CIDEr-D rewards the n-grams that most
# references share, and a model may learn to write that consensus, while each reference of the
# scenes world is one of several caption styles (counts, inventories, relations, the scene). On
# COCO, too, tuned captioners score above the human captions.

# %%
ceiling, _ = cm.reference_ceiling(test)
ceiling_rows = [{"captions": "references (each vs the other four)", "CIDEr-D": ceiling,
                 "relative to the references": 1.0}]
for name in models:
    v = cm.leave_one_out_cider(decoded[name, "greedy"].captions, test)
    ceiling_rows.append({"captions": f"{name}, greedy", "CIDEr-D": v,
                         "relative to the references": v / ceiling})
ctx.save_table("captioning_ceiling", ceiling_rows)
for r in ceiling_rows:
    print(f"{r['captions']:38s} CIDEr-D {r['CIDEr-D']:.4f}  "
          f"({r['relative to the references']:.0%} of the references' own score)")
ctx.record("captioning", "reference_ceiling_CIDEr-D", value=ceiling,
           note="each test reference vs the other four (pycocoevalcap)")
ctx.record("captioning", "test_CIDEr-D_greedy_vs_four_refs", mle=ceiling_rows[1]["CIDEr-D"],
           tuned=ceiling_rows[2]["CIDEr-D"], note="the ceiling's conditions; tuned = LOO")

# %% [markdown]
# ## 5. Captions before and after, on the same test images

# %%
truths = result.test_truths
shown = list(range(cfg.captioning.shown))
greedy = {name: decoded[name, "greedy"] for name in models}
ctx.save_table("captioning_examples", cfig.example_rows(test, greedy, shown, truths))
fig = cfig.draw_examples(test, greedy, shown, truths=truths)
ctx.save_figure(fig, "captioning_examples.png")
plt.show()

# %% [markdown]
# **What a CIDEr-D gain is made of.** The test images where leave-one-out tuning gained the most
# CIDEr-D over MLE while its grounded F1 fell (then, if there are fewer, where both rose):
# chosen on the test split to illustrate, not to choose anything.

# %%
contrast = cfig.contrast_indices(greedy["MLE"], greedy["LOO"], truths, cfg.captioning.shown)
ctx.save_table("captioning_contrast_examples",
               cfig.example_rows(test, greedy, contrast, truths))
fig = cfig.draw_examples(test, greedy, contrast, truths=truths)
ctx.save_figure(fig, "captioning_contrast_examples.png")
plt.show()
f1s = {name: judge.caption_f1s(d.captions, truths) for name, d in greedy.items()}
up = greedy["LOO"].reward > greedy["MLE"].reward
print(f"LOO vs MLE, greedy, per test image: CIDEr-D up on {up.mean():.0%}; of those, grounded "
      f"F1 down on {(f1s['LOO'][up] < f1s['MLE'][up]).mean():.0%}, up on "
      f"{(f1s['LOO'][up] > f1s['MLE'][up]).mean():.0%}")

# %% [markdown]
# ## 6. The reward distribution before and after tuning
# The paper's analysis: the CIDEr-D reward of each validation image's greedy caption, and of N
# sampled captions per image, summarised by mean, standard deviation and percentiles. Tuning
# should move the whole distribution, and most of all the sampled captions, whose expected
# reward is what REINFORCE maximises.

# %%
val = ev.load_split(cfg, "validation", cfg.run.eval_examples, cache)
dists = {name: cm.reward_distribution(m, task, val, cfg.rl.num_samples, jax.random.key(ctx.seed))
         for name, m in models.items()}
dist_rows = cm.distribution_rows(dists)
ctx.save_table("captioning_reward_distribution", dist_rows)
for r in dist_rows:
    print(f"{r['model']:4s} {r['decoding']:7s} n={r['n']:5d}  mean {r['mean']:.3f}  "
          f"std {r['std']:.3f}  p10 {r['p10']:.3f}  p50 {r['p50']:.3f}  p90 {r['p90']:.3f}")
for d in ("greedy", "sampled"):
    ctx.record("captioning", f"val_reward_{d}_mean", mle=dists["MLE"][d]["mean"],
               tuned=dists["LOO"][d]["mean"], note="CIDEr-D reward, training df; tuned = LOO")

# %% [markdown]
# ## 7. What the captions say: template collapse
# CIDEr-D rewards the n-grams the references share; it does not check that a caption is true of
# its image. How many distinct captions and words each model writes over the test split, and
# which shape its shape nouns name (synonyms mapped to their shape; the scenes hold each shape
# about equally often, as the references' row shows). "triangle" is the one shape noun of the
# caption grammar without a synonym, so a model that cannot tell shapes apart maximises CIDEr-D
# by always writing it (the captioner trained from random weights did). A model that can tell
# them apart may still collapse another way: onto one sentence form, which shows as fewer
# distinct words while the distinct captions (different objects in the same form) stay many.

# %%
collapse_rows = [{"from": "references (all five per image)",
                  **cm.caption_statistics([str(c) for ex in test.examples
                                           for c in ex["captions"]])}]
for name in models:
    for d in ("greedy", "beam"):
        collapse_rows.append({"from": f"{name}, {d}",
                              **cm.caption_statistics(decoded[name, d].captions)})
shape_keys = sorted({k for r in collapse_rows for k in r if k.startswith("shape: ")})
collapse_rows = [{k: r.get(k, 0.0) for k in ("from", "captions", "distinct captions",
                                              "distinct words", "shape nouns", *shape_keys)}
                 for r in collapse_rows]
ctx.save_table("captioning_collapse", collapse_rows)
for r in collapse_rows:
    shares = "  ".join(f"{k[7:]} {r[k]:.0%}" for k in shape_keys)
    print(f"{r['from']:33s} {r['distinct captions']:5.0f} distinct of {r['captions']:5.0f}  "
          f"{r['distinct words']:3.0f} words  shapes: {shares}")

# %% [markdown]
# ## 8. The grounded judge on the references: its ceiling
# Every reference caption is true of its scene, so its precision, count and relation accuracy
# are 100 (a test checks it on the whole cpu test split); its recall is what one caption per
# image usually names (a reference of the "four shapes" kind names no shape). The models' rows
# of section 3 compare with these.

# %%
ref_caps = [str(c) for ex in test.examples for c in ex["captions"]]
ref_truths = [t for t, ex in zip(truths, test.examples, strict=True) for _ in ex["captions"]]
ref_row = judge.judge_split(ref_caps, ref_truths)
judge_rows = [{"captions": "references (all five per image)", **ref_row}]
judge_rows += [{"captions": f"{r['model']}, {r['decoding']}",
                **{k: r[k] for k in ref_row}} for r in rows]
ctx.save_table("captioning_grounded", judge_rows)
for r in judge_rows:
    print(f"{r['captions']:36s} P {r['precision']:5.1f}  R {r['recall']:5.1f}  "
          f"F1 {r['F1']:5.1f}  count {r['count accuracy']:5.1f}  relation "
          f"{r['relation accuracy']:5.1f}  claims/caption {r['objects claimed/caption']:.2f}")
ctx.record("captioning", "references_grounded_recall", value=ref_row["recall"],
           note="the judge's ceiling: recall of the test references (percent)")

# %% [markdown]
# ## What this run shows, beside the paper
# The paper reports that tuning a captioner with CIDEr as its reward raises CIDEr; the cell
# below prints whether this run does, for each baseline, against MLE and against MLE trained
# on for as long, and what the grounded judge says of the same captions. The wrong-image
# control (section 1) says how much the MLE model reads colours, shapes and relations;
# sections 7 and 8 say what tuning did with that. A CIDEr-D gain that comes with a lower
# grounded F1 or with collapsed shape nouns is the paper's own warning about reward hacking,
# measured: the reward can go up by writing the references' consensus wording, not by looking
# harder. The grounded run shows what a reward that checks the objects changes, and its count
# and relation accuracy, which its reward does not contain, are its independent check. Read
# the distinct words beside the distinct captions: a gain that comes with one sentence form is
# a narrower captioner even when every claim in it is true.

# %%
for d in ("greedy", "beam"):
    pick = {r["model"]: r for r in rows if r["decoding"] == d}
    base = pick["MLE"]
    for name, r in pick.items():
        if name == "MLE":
            continue
        print(f"{d:6s} {name:13s} CIDEr-D {base['CIDEr-D']:.3f} -> {r['CIDEr-D']:.3f} "
              f"({r['CIDEr-D'] / base['CIDEr-D'] - 1:+.1%}); grounded F1 {base['F1']:.1f} -> "
              f"{r['F1']:.1f} ({r['F1'] - base['F1']:+.1f}); count accuracy "
              f"{base['count accuracy']:.1f} -> {r['count accuracy']:.1f}; relation accuracy "
              f"{base['relation accuracy']:.1f} -> {r['relation accuracy']:.1f}")

# %%
ctx.finish()
