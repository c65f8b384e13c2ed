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
# # Colorization with UViM: MLE, then tuning for colourfulness
#
# The paper's Figure 1c on the scenes world. UViM colourizes in two stages. **Stage I** is a
# VQ-VAE: its encoder sees the colour image (and the grey one as context) and compresses the
# colours into 16 codes from a codebook of 256; its decoder turns codes plus the grey image back
# into colour. **Stage II** is our encoder-decoder: from the grey image alone it writes the 16
# code tokens, trained by maximum likelihood (MLE) on stage I's codes of the training images: it
# learns how colours are distributed given the grey image, and on a world whose colours cannot be
# told from the grey image it can only guess them. The paper tunes stage II with REINFORCE on the
# **colourfulness** of the decoded image (Hasler & Süsstrunk; paper: 0.41 → 1.79, "improves
# color diversity and saturation").
#
# Colourfulness rewards saturated, varied colours whether or not they are plausible, so every
# row here is read beside judges of the intended use: the **luma PSNR** of the decoded image
# against the grey input (a colourizer must keep the image it was given), the **in-palette
# rate** (the share of pixels in a colour their region can be drawn in), the **hue diversity**
# over all test pixels (entropy of their hues; the share of the most common hue), and three
# reference
# rows: the truth, a **dull bound** (every region at its expected colour) and the **best
# in-palette recolouring** (every region in its most colourful drawable colour: the ceiling of
# an honest colourizer). The world (notes/colorization_world.md) draws every region's hue at
# random, so the grey image does not say which colour a region has: there is room above MLE.
#
# The steps: (1) stage I, the oracle, with its reconstruction and codebook usage; (2) stage II
# by MLE with its curve and the wrong-image control; (3) two tunings (colourfulness alone, and
# with a luma guard), the checkpoint of each chosen on validation; (4) the test table; (5) the
# same test images before and after; (6) validation during tuning. The logic lives in
# `rlcv_lib.tasks.colorization` (`tune` for the main path) and `rlcv_lib.tasks.uvim`.

# %% tags=["parameters"]
preset = "cpu"     # smoke | cpu | gpu | paper
seed = 0
workdir = ""       # checkpoints and caches; "" -> runs/<preset>
figures_dir = ""   # "" -> figures/ for the cpu preset, <workdir>/figures otherwise
overrides = {}     # config overrides, e.g. {"tune.num_steps": 300}

# %%
from rlcv_lib import notebook

ctx = notebook.setup("05_colorization", preset=preset, seed=seed, workdir=workdir,
                     figures_dir=figures_dir, overrides=overrides)

# %%
import time

import matplotlib.pyplot as plt

from rlcv_lib.core import evaluate as ev
from rlcv_lib.core import shipped
from rlcv_lib.tasks.colorization import figures as cfig
from rlcv_lib.tasks.colorization import pretrain as cp
from rlcv_lib.tasks.colorization import task as col
from rlcv_lib.tasks.colorization import tune as ct

cfg = ctx.config  # resolved for colorization: its world, model, stage I and tuning presets
print(cfg.colorization, cfg.vqvae, cfg.rl, cfg.tune, sep="\n")

cache_dir = str(ctx.workdir / "scenes_cache")
timings = {}

# %% [markdown]
# ## 1. Stage I, the oracle
# The shipped stage I (`checkpoints/colorization-stage1-cpu`, made by `make pretrain`) or, where
# none is shipped for the preset, stage I trained here. Its curve on validation: the PSNR of the
# reconstruction from all 16 codes, and with **every code dropped** (the decoder sees only the
# grey image: what it can tell without the codes), and the share of the codebook the validation
# images use. What stage II can reach is bounded by this oracle.

# %%
t0 = time.time()
stage1 = shipped.load_or_pretrain(col.STAGE1_RECIPE, cfg, ctx.workdir / "colorization_stage1",
                                  stage="stage1", cache_dir=cache_dir, progress=cfg.run.progress)
timings["stage1_load_or_train"] = time.time() - t0
evals1 = stage1.history.records("eval")
print(f"stage I: {stage1.source}", stage1.path or "", stage1.manifest.get("steps"), "steps")
last1 = evals1[-1]
print(f"validation PSNR {last1['psnr']:.2f} dB with codes, {last1['psnr_without_codes']:.2f} dB "
      f"without; codebook used {100 * last1['codebook_used']:.1f}%; colourfulness of the "
      f"reconstruction {last1['colourfulness']:.3f} (truth {last1['colourfulness_truth']:.3f})")
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.1))
st = [r["step"] for r in evals1]
ax1.plot(st, [r["psnr"] for r in evals1], "o-", label="all codes")
ax1.plot(st, [r["psnr_without_codes"] for r in evals1], "s--", label="every code dropped")
ax1.set(xlabel="stage I update", ylabel="validation PSNR (dB)", title="Stage I reconstruction")
ax1.legend()
ax2.plot(st, [100 * r["codebook_used"] for r in evals1], "o-")
ax2.set(xlabel="stage I update", ylabel="codebook used (%)", title="Codebook usage")
ctx.save_figure(fig, "colorization_stage1_curve.png")
plt.show()
ctx.record("colorization", "stage1_psnr", value=last1["psnr"],
           note="validation, dB, the stage I oracle from all codes")
ctx.record("colorization", "stage1_psnr_without_codes", value=last1["psnr_without_codes"],
           note="validation, dB, every code dropped")

# %% [markdown]
# ## 2. Stage II by MLE
# The shipped stage II (`checkpoints/colorization-stage2-cpu`), whose manifest names the stage I
# it learnt the codes of, or MLE here. Its encoder started from the package's shared scenes
# encoder (`model.encoder_init="shipped"`, trained with a share of grey images for this input).
# The curve: the teacher-forced NLL of stage I's codes, and the colourfulness of greedy decoding
# and of one sample per image at temperature 1.

# %%
t0 = time.time()
pre = shipped.load_or_pretrain(cp.STAGE2_RECIPE, cfg, ctx.workdir / "colorization_stage2",
                               cache_dir=cache_dir, progress=cfg.run.progress)
timings["stage2_load_or_train"] = time.time() - t0
evals = pre.history.records("eval")
print(f"stage II: {pre.source}", pre.path or "", pre.manifest.get("steps"), "steps; encoder from",
      pre.encoder_start)
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.1))
st = [r["step"] for r in evals]
ax1.plot(st, [r["nll_code"] for r in evals], "o-")
ax1.set(xlabel="MLE update", ylabel="NLL of the codes (nats/token)", title="Stage II MLE")
ax2.plot(st, [r["colourfulness"] for r in evals], "o-", label="greedy")
ax2.plot(st, [r["colourfulness_sampled"] for r in evals], "s-", label="temperature 1")
ax2.set(xlabel="MLE update", ylabel="validation colourfulness", title="How colourful")
ax2.legend()
ctx.save_figure(fig, "colorization_mle_curve.png")
plt.show()

# %% [markdown]
# **Does stage II look?** The wrong-image control: the validation NLL of stage I's codes with
# the true grey image and with another scene's. Codes carry where the regions are (read off the
# grey image) and which colours they have (not in it): a gap above zero says the model reads the
# image for the first.

# %%
control, where = pre.wrong_image_control(
    ev.load_split(cfg, "validation", shipped.CONTROL_EXAMPLES, cache_dir))
print("wrong-image control from the", where)
control_rows = ev.control_rows(control)
ctx.save_table("colorization_wrong_image", control_rows)
for r in control_rows:
    print(f"{r['token kind']:5s} true {r['NLL true image']:.3f}  wrong "
          f"{r['NLL wrong image']:.3f}  gap {r['gap']:+.3f}")

# %% [markdown]
# ## 3. Reward tuning, and every model on the test split
# One call, `ct.tune_and_evaluate` (what `python -m rlcv_lib tune colorization cpu` runs): the
# MLE model's validation luma PSNR and in-palette rate set the floors of the checkpoint choice;
# two tunings (`tuned`: colourfulness; `guarded`: colourfulness minus
# `colorization.guard_weight` per dB of luma PSNR below `colorization.guard_luma_psnr`), each
# choosing on validation the most colourful evaluation that stays within
# `colorization.select_luma_drop` dB of MLE's luma PSNR and not below its in-palette rate; the
# control *MLE trained on as long* as the plain tuning's updates took; then every model greedy
# and at temperature 1, and the reference rows, on the test split.

# %%
t0 = time.time()
result = ct.tune_and_evaluate(cfg, workdir=ctx.workdir, pre=pre, cache_dir=cache_dir,
                              progress=cfg.run.progress)
timings["tune_and_evaluate"] = time.time() - t0
for name, run in result.runs.items():
    print(f"{name}: {run.seconds:.0f} s, chosen update {run.best_step} (validation "
          f"colourfulness {run.best_value:.3f})")
print("floors of the choice:", {k: round(v, 3) for k, v in result.floor.items()})

# %% [markdown]
# ## 4. The table
# Colourfulness M on [−1, 1] (and on 0–255), luma PSNR against the grey input, colour PSNR
# against the true colours (low for every colourizer of a world whose colours are drawn at
# random: the dull bound scores highest on it, being the mean), the in-palette rate, and the
# hue diversity: the entropy (bits) of the test pixels' hues (ten vivid hues and neutral) and the
# share of the most common hue. Each run also shows its last update, marked as such: a
# diagnostic not chosen on validation, what the reward alone made of the model where the choice
# fell elsewhere (on the MLE model, say, when every later evaluation broke a floor).

# %%
rows = result.rows
ctx.save_table("colorization_results", rows)
for r in rows:
    print(f"{r['model']:28s} {r['decoding']:9s} M {r['colourfulness']:.3f} "
          f"({r['colourfulness_255']:5.1f})  luma PSNR {r['luma_psnr']:6.2f}  PSNR "
          f"{r['psnr']:6.2f}  in palette {r['in_palette']:5.1f}%  hues "
          f"{r['hue_entropy']:.2f} bits (top {r['top_hue_share']:.0f}%)")
pick = {(r["model"], r["decoding"]): r for r in rows}
mle, tuned, guarded = pick["MLE", "T=1"], pick["tuned", "T=1"], pick["guarded", "T=1"]
for key in ("colourfulness", "luma_psnr", "in_palette", "hue_entropy"):
    ctx.record("colorization", key, mle=mle[key], tuned=tuned[key],
               paper_mle=0.41 if key == "colourfulness" else None,
               paper_tuned=1.79 if key == "colourfulness" else None,
               note="test split, temperature 1; colourfulness on [-1, 1], hue entropy in bits")
    ctx.record("colorization", f"guarded_{key}", value=guarded[key],
               note="test split, temperature 1, the guarded run")
ctx.record("colorization", "colourfulness_mle_greedy", value=pick["MLE", "greedy"]["colourfulness"],
           note="test split, greedy (the near-zero-temperature control)")
for name in ("truth", "dull bound", "best in-palette recolouring"):
    ctx.record("colorization", f"colourfulness_{name.replace(' ', '_')}",
               value=pick[name, "reference"]["colourfulness"], note="test split, reference row")
for name in ct.RUNS:
    for key in ("colourfulness", "luma_psnr", "in_palette", "hue_entropy"):
        ctx.record("colorization", f"{name}_last_update_{key}",
                   value=pick[f"{name}, last update", "T=1"][key],
                   note=f"test split, temperature 1, the run's last update (update "
                        f"{result.runs[name].history.records('eval')[-1]['step']}; a "
                        f"diagnostic, chosen: update {result.runs[name].best_step})")
if ct.MLE_AS_LONG in result.models:
    ctx.record("colorization", "colourfulness_mle_as_long",
               value=pick[ct.MLE_AS_LONG, "T=1"]["colourfulness"],
               note=f"test split, temperature 1, {result.control_info[ct.MLE_AS_LONG]['steps']} "
                    f"more MLE updates")

# %% [markdown]
# ## 5. Before and after, on the same test images
# The first `colorization.shown` test scenes: the grey input, MLE at temperature 1, both tuned
# models at temperature 1 (the plain run's last update where its choice fell on MLE), the best
# in-palette recolouring and the truth, each titled with its colourfulness M.

# %%
batch = pre.task.batch(result.test.batch)
tuned_name = "tuned" if result.runs["tuned"].best_step else "tuned, last update"
columns = {"grey input": batch["context"], "MLE": result.images["MLE, T=1"],
           tuned_name: result.images[f"{tuned_name}, T=1"],
           "guarded": result.images["guarded, T=1"],
           "in-palette ceiling": result.images["best in-palette recolouring"],
           "truth": result.images["truth"]}
fig = cfig.before_after_figure(columns, range(min(cfg.colorization.shown, len(batch["image"]))))
ctx.save_figure(fig, "colorization_before_after.png")
plt.show()

# %% [markdown]
# ## 6. Validation during tuning
# The mean reward of N samples per image (what REINFORCE maximises) and the judges of one
# sample per image, at each evaluation of each run; the dotted lines mark the chosen updates.

# %%
curve = result.summary()["curve"]
ctx.save_table("colorization_tuning_curve",
               [{k: r[k] for k in ("model", "step", "reward_sampled", "colourfulness",
                                   "luma_psnr", "in_palette", "select")} for r in curve])
fig = cfig.tuning_curves_figure(curve, {n: r.best_step for n, r in result.runs.items()},
                                [("reward_sampled", "validation reward (sampled)"),
                                 ("luma_psnr", "luma PSNR (dB)"),
                                 ("in_palette", "in palette (%)")])
ctx.save_figure(fig, "colorization_tuning_curve.png")
plt.show()

# %% [markdown]
# ## What this run shows, beside the paper
# The paper reports colourfulness 0.41 → 1.79 (×4.4) and "improves color diversity and
# saturation". The cell prints the gain of each tuned row over MLE at temperature 1, against
# the aims of this package (×2, or half the gap to the in-palette ceiling where ×2 lies above
# it), with the judges that say whether the colours are still a colourization of the input, and
# the hue diversity that says whether the tuned colours still vary from scene to scene.

# %%
ceiling = pick["best in-palette recolouring", "reference"]["colourfulness"]
for name, r in (("tuned", tuned), ("guarded", guarded)):
    ratio = r["colourfulness"] / mle["colourfulness"]
    gap = (r["colourfulness"] - mle["colourfulness"]) / (ceiling - mle["colourfulness"])
    print(f"{name}: M {mle['colourfulness']:.3f} -> {r['colourfulness']:.3f} (x{ratio:.2f}; "
          f"{gap:.0%} of the gap to the in-palette ceiling {ceiling:.3f}); luma PSNR "
          f"{mle['luma_psnr']:.2f} -> {r['luma_psnr']:.2f} dB; in palette "
          f"{mle['in_palette']:.1f}% -> {r['in_palette']:.1f}%")
for name in ("MLE", "tuned", "tuned, last update", "guarded"):
    r = pick[name, "T=1"]
    print(f"{name}: hue entropy {r['hue_entropy']:.2f} bits, the most common hue "
          f"{r['top_hue_share']:.0f}% of the pixels")
for name in ("truth", "best in-palette recolouring"):
    r = pick[name, "reference"]
    print(f"{name}: hue entropy {r['hue_entropy']:.2f} bits, the most common hue "
          f"{r['top_hue_share']:.0f}% of the pixels")
print(f"MLE greedy M {pick['MLE', 'greedy']['colourfulness']:.3f}; truth "
      f"{pick['truth', 'reference']['colourfulness']:.3f}; dull bound "
      f"{pick['dull bound', 'reference']['colourfulness']:.3f}")

# %% [markdown]
# ## Times

# %%
for k, v in timings.items():
    print(f"{k:25s} {v:7.1f} s")
for name, run in result.runs.items():
    ctx.record("colorization", f"{name}_tune_seconds", value=run.seconds,
               note="wall clock, evaluations included")

# %%
ctx.finish()
