"""Colorization (UViM, the paper's Figure 1c): ``reward`` (colourfulness), ``world`` (the scenes
world with headroom it runs on), ``references`` (truth, dull bound, best in-palette
recolouring, and the in-palette and hue judges), ``task`` (config, grey input, UViM stage I),
``pretrain`` (stage II), ``tune`` (plain and guarded tuning, the test rows), ``figures``.
Notebook: ``05_colorization``. The ``paper`` preset has UViM's sizes and grey conversion, so
big_vision's released checkpoints load into it (:mod:`rlcv_lib.tasks.uvim.released`, target
``rgb`` = the release's ``color``); pretraining, tuning and evaluation read only the scenes world
so far (``imagenet2012`` has an adapter, not yet a run on it)."""

from rlcv_lib.tasks import Stage, TaskSpec

SPEC = TaskSpec(
    name="colorization",
    section="rlcv_lib.tasks.colorization.task:ColorizationConfig:COLORIZATION_PRESETS",
    shared_presets={"world": "rlcv_lib.tasks.colorization.world:COLORIZATION_WORLD_PRESETS",
                    "vqvae": "rlcv_lib.tasks.colorization.task:VQVAE_COLOUR_PRESETS",
                    "model": "rlcv_lib.tasks.colorization.task:MODEL_PRESETS",
                    "train": "rlcv_lib.tasks.colorization.task:TRAIN_PRESETS",
                    "tune": "rlcv_lib.tasks.colorization.task:TUNE_PRESETS"},
    stages=(Stage("stage1", "rlcv_lib.tasks.colorization.task:STAGE1_RECIPE",
                  ("world", "vqvae", "stage1", "colorization")),
            # stage II's manifest records stage I's (``requires``): no need to hash its sections
            Stage("stage2", "rlcv_lib.tasks.colorization.pretrain:STAGE2_RECIPE",
                  ("model", "world", "train", "colorization"))),
    tune="rlcv_lib.tasks.colorization.tune:tune_and_evaluate",
    notebook="05_colorization",
)
