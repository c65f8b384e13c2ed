"""Colorization (UViM, the paper's Figure 1c), being built: ``reward`` (colourfulness),
``world`` (the scenes world with headroom it runs on), ``references`` (truth, dull bound, best
in-palette recolouring) and ``task`` (config, grey input, UViM stage I pretraining). Stage II,
tuning and notebook ``05_colorization`` come with the rest of issue 19; until then the task has
one stage, ``stage1``, and no tuning entry point."""

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
