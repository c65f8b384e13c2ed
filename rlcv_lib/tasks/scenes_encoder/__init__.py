"""The shared scenes encoder (docs/design.md §4.3): ``targets`` (per-patch category, thing
colour and box-centre truth from a scenes batch) and ``task`` (its heads, losses, step,
evaluation and pretraining recipe). No tuning and no notebook of its own: tasks start their MLE
from it with ``model.encoder_init`` (:mod:`rlcv_lib.core.encoder_init`)."""

from rlcv_lib.tasks import Stage, TaskSpec

SPEC = TaskSpec(
    name="scenes_encoder",
    section="rlcv_lib.tasks.scenes_encoder.task:ScenesEncoderConfig:SCENES_ENCODER_PRESETS",
    shared_presets={"train": "rlcv_lib.tasks.scenes_encoder.task:TRAIN_PRESETS"},
    stages=(Stage("mle", "rlcv_lib.tasks.scenes_encoder.task:RECIPE",
                  ("model", "world", "train", "scenes_encoder")),),
    check="rlcv_lib.tasks.scenes_encoder.task:check_config",
)
