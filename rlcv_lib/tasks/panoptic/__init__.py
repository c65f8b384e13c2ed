"""Panoptic segmentation (UViM, the paper's Figure 1b): ``reward`` (the per-image panoptic
quality with panopticapi's rules), ``task`` (config, the one-hot semantic and instance targets
of UViM's stage I and their decoding into segments, UViM stage I pretraining), ``pretrain``
(stage II: the code generator and its MLE), ``judges`` (panopticapi's PQ/SQ/RQ, incoherent
segments by size, the area filter), ``tune`` (per-image PQ tuning and its controls) and
``figures``. Notebook: ``06_panoptic``. The ``paper`` preset has UViM's sizes and COCO
panoptic's 133 categories, so big_vision's released checkpoints load into it
(:mod:`rlcv_lib.tasks.uvim.released`); ``coco/2017_panoptic`` reaches its stage I batches
through :mod:`rlcv_lib.data.adapters`, but pretraining, tuning and evaluation read only the
scenes world so far."""

from rlcv_lib.tasks import Stage, TaskSpec

SPEC = TaskSpec(
    name="panoptic",
    section="rlcv_lib.tasks.panoptic.task:PanopticConfig:PANOPTIC_PRESETS",
    shared_presets={"vqvae": "rlcv_lib.tasks.panoptic.task:VQVAE_PANOPTIC_PRESETS",
                    "model": "rlcv_lib.tasks.panoptic.task:MODEL_PRESETS",
                    "train": "rlcv_lib.tasks.panoptic.task:TRAIN_PRESETS",
                    "tune": "rlcv_lib.tasks.panoptic.task:TUNE_PRESETS"},
    stages=(Stage("stage1", "rlcv_lib.tasks.panoptic.task:STAGE1_RECIPE",
                  ("world", "vqvae", "stage1", "panoptic")),
            # stage II's manifest records stage I's (``requires``): no need to hash its sections
            Stage("stage2", "rlcv_lib.tasks.panoptic.pretrain:STAGE2_RECIPE",
                  ("model", "world", "train", "panoptic"))),
    tune="rlcv_lib.tasks.panoptic.tune:tune_and_evaluate",
    notebook="06_panoptic",
)
