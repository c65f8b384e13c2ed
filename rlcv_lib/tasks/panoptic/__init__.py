"""Panoptic segmentation (UViM, the paper's Figure 1b), being built: ``reward`` (the per-image
panoptic quality with panopticapi's rules) and ``task`` (config, the one-hot semantic and
instance targets of UViM's stage I and their decoding into segments, UViM stage I pretraining).
Stage II, the tokens, tuning and notebook ``06_panoptic`` come with the rest of issue 20; until
then the task has one stage, ``stage1``, and no tuning entry point."""

from rlcv_lib.tasks import Stage, TaskSpec

SPEC = TaskSpec(
    name="panoptic",
    section="rlcv_lib.tasks.panoptic.task:PanopticConfig:PANOPTIC_PRESETS",
    shared_presets={"vqvae": "rlcv_lib.tasks.panoptic.task:VQVAE_PANOPTIC_PRESETS"},
    stages=(Stage("stage1", "rlcv_lib.tasks.panoptic.task:STAGE1_RECIPE",
                  ("world", "vqvae", "stage1", "panoptic")),),
)
