# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The scenes world
#
# No COCO or ImageNet can be downloaded here, so every task of this reproduction takes its
# data from **scenes**, a procedural world generated deterministically from
# `(world_seed, split, index)` (`rlcv_lib.data.scenes`). One generator serves all four tasks:
#
# * **detection**: boxes of the *visible* part of each thing (COCO layout; the COCO
#   small/medium/large buckets are scaled to the image area);
# * **panoptic segmentation**: a map of segment ids, things and stuff (COCO panoptic layout);
# * **colorization**: the grey image is the input; thing colours come from a palette where
#   several hues share each grey level and a frequent *muted* mode pulls colours towards grey;
# * **captioning**: five true captions per image from a grammar (counts, colours, sizes,
#   relations, synonyms, word orders).
#
# This notebook shows a gallery and the statistics that matter for the paper's failure modes:
# crowded scenes (an MLE detector stops early), ambiguous colours (MLE colourizations drift
# dull), small objects (MLE panoptic models fragment them), and the CIDEr-D that the
# references reach against each other (the ceiling for a captioner).
#
# **What the default (`cpu`) world is.** It is deliberately easy, so that a small model trained
# on a 2-core CPU learns to look: 64×64 images, three shapes, one to four large things, no
# muted colours. So in this preset the crowding, small-thing and muted-colour statistics below
# are (near) zero; the `gpu` and `paper` presets turn those knobs up (`overrides`, e.g.
# `{"world.max_objects": 12}`, change them here). Of the four tasks, detection and captioning
# run on it today; panoptic segmentation and colorization have their data here but no model
# yet (open issues of the package).

# %% tags=["parameters"]
preset = "cpu"     # smoke | cpu | gpu | paper
seed = 0
workdir = ""       # checkpoints and caches; "" -> runs/<preset>
figures_dir = ""   # "" -> figures/ for the cpu preset, <workdir>/figures otherwise
overrides = {}     # config overrides, e.g. {"world.image_size": 96}

# %%
from rlcv_lib import notebook

ctx = notebook.setup("01_scenes_world", preset=preset, seed=seed, workdir=workdir,
                     figures_dir=figures_dir, overrides=overrides)
cfg = ctx.config
world = cfg.world

# %%
import time

import matplotlib.pyplot as plt

from rlcv_lib.config import describe
from rlcv_lib.data import draw, scenes, stats

print(describe(cfg))
print("world version", scenes.WORLD_VERSION, "config hash", scenes.config_hash(world))
print("minimum visible size:", scenes.min_visible_pixels(world), "pixels")

# %% [markdown]
# ## Gallery
# Each row: the colour image with the annotated boxes; the panoptic map (each segment its own
# colour, void black: things below the minimum visible size are void and unannotated); the
# grey image a colourizer sees; the five reference captions.

# %%
t0 = time.time()
validation = [scenes.generate(world, "validation", i) for i in range(world.validation_size)]
seconds = time.time() - t0
print(f"generated {len(validation)} validation scenes in {seconds:.1f} s "
      f"({len(validation) / seconds:.0f} images/s)")
shown = [validation[i] for i in range(min(6, len(validation)))]
fig = draw.gallery(world, shown)
ctx.save_figure(fig, "scenes_gallery.png")
plt.show()

# %% [markdown]
# ## Objects, sizes and classes
# Objects per image (annotated, and painted before the visibility rule), the COCO area buckets
# relative to the image area, the class balance of things and how often each stuff appears.

# %%
obj = stats.object_stats(world, validation)
fig = draw.statistics_figure(world, obj)
ctx.save_figure(fig, "scenes_objects.png")
plt.show()
print({k: obj[k] for k in ("mean_objects", "max_objects", "crowded_fraction", "empty_fraction",
                           "size_buckets", "muted_fraction")})

# %% [markdown]
# ## Colour ambiguity
# Left: the colour names of things at each grey level (what a colourizer must guess from the
# grey input). Right: over all coloured pixels (stuff included), the entropy of the hue given
# the grey value. High conditional entropy means grey -> colour is truly ambiguous, so an MLE
# colourizer that averages hues produces dull images; the reward (colourfulness) can fix that.

# %%
import numpy as np

pix = stats.pixel_hue_given_grey(np.stack([s.image for s in validation]))
fig = draw.colour_figure(obj, pix)
ctx.save_figure(fig, "scenes_colour.png")
plt.show()

# %% [markdown]
# ## Captions
# Caption length and vocabulary, and the CIDEr-D of each reference caption scored against the
# image's other four references (pycocoevalcap): the ceiling a captioner can reach on this
# world, computed on the test split where captioning results are reported.

# %%
test_captions = [scenes.generate(world, "test", i).captions for i in range(world.test_size)]
cap = stats.caption_stats(test_captions)
cider_mean, cider = stats.reference_cider(test_captions)
fig = draw.captions_figure(cap, cider)
ctx.save_figure(fig, "scenes_captions.png")
plt.show()
print(f"reference CIDEr-D {cider_mean:.3f}; vocabulary {cap['vocabulary']}; "
      f"distinct captions {100 * cap['distinct_fraction']:.1f}%")

# %% [markdown]
# ## Summary table and recorded numbers

# %%
buckets = obj["size_buckets"]
rows = [
    {"statistic": "images (validation)", "value": len(validation)},
    {"statistic": "generation images/s", "value": round(len(validation) / seconds, 1)},
    {"statistic": "things per image (mean)", "value": obj["mean_objects"]},
    {"statistic": "things per image (max)", "value": obj["max_objects"]},
    {"statistic": "images with >= 8 things", "value": obj["crowded_fraction"]},
    {"statistic": "images with no thing", "value": obj["empty_fraction"]},
    *[{"statistic": f"{b} things (fraction)", "value": v / max(1, sum(buckets.values()))}
      for b, v in buckets.items()],
    {"statistic": "muted colours (fraction)", "value": obj["muted_fraction"]},
    {"statistic": "H(colour name | grey level), bits",
     "value": obj["color_entropy_given_grey_bits"]},
    {"statistic": "H(hue | grey) over pixels, bits", "value": pix["hue_given_grey_bits"]},
    {"statistic": "caption length (mean words)", "value": cap["mean_length"]},
    {"statistic": "caption vocabulary", "value": cap["vocabulary"]},
    {"statistic": "reference CIDEr-D (test, leave one out)", "value": cider_mean},
]
ctx.save_table("scenes_stats", rows)
ctx.record(task="scenes", metric="reference_cider_d", value=cider_mean,
           note="each test reference vs the other four (pycocoevalcap CIDEr-D): captioner ceiling")
ctx.record(task="scenes", metric="objects_per_image", value=obj["mean_objects"])
ctx.record(task="scenes", metric="crowded_fraction", value=obj["crowded_fraction"],
           note="fraction of validation images with >= 8 annotated things")
ctx.record(task="scenes", metric="small_fraction",
           value=buckets["small"] / max(1, sum(buckets.values())))
ctx.record(task="scenes", metric="hue_entropy_given_grey_bits", value=pix["hue_given_grey_bits"])
ctx.record(task="scenes", metric="caption_vocabulary", value=cap["vocabulary"])
for row in rows:
    print(f"{row['statistic']:45s} {row['value']}")

# %%
ctx.finish()
