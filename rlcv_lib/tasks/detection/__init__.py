"""Object detection (pix2seq tokens, the paper's detection reward): ``task`` (tokens, grammar,
reward, judge), ``reward`` and ``reward_released`` (the reward, and a replay of the released
one), ``pretrain`` (MLE), ``metrics`` (decode and score rules, COCO metrics), ``tune`` (reward
tuning and its monitor), ``figures``. Notebook: ``03_detection``."""

from rlcv_lib.tasks import Stage, TaskSpec

SPEC = TaskSpec(
    name="detection",
    section="rlcv_lib.tasks.detection.task:DetectionConfig:DETECTION_PRESETS",
    shared_presets={"tune": "rlcv_lib.tasks.detection.task:TUNE_PRESETS",
                    "model": "rlcv_lib.tasks.detection.task:MODEL_PRESETS",
                    "train": "rlcv_lib.tasks.detection.task:TRAIN_PRESETS"},
    stages=(Stage("mle", "rlcv_lib.tasks.detection.pretrain:RECIPE",
                  ("model", "world", "train", "detection")),),
    tune="rlcv_lib.tasks.detection.tune:tune_and_evaluate",
    notebook="03_detection",
    check="rlcv_lib.tasks.detection.task:check_config",
)
