"""Image captioning (CIDEr-D reward): ``task`` (tokenizer, reward, judge), ``reward``
(vectorised CIDEr-D), ``pretrain`` (MLE), ``metrics`` (decoding rules, pycocoevalcap scores,
reward distribution, reference ceiling), ``tune`` (leave-one-out and self-critical tuning),
``figures``. Notebook: ``04_captioning``."""

from rlcv_lib.tasks import Stage, TaskSpec

SPEC = TaskSpec(
    name="captioning",
    section="rlcv_lib.tasks.captioning.task:CaptioningConfig:CAPTIONING_PRESETS",
    shared_presets={"model": "rlcv_lib.tasks.captioning.task:MODEL_PRESETS",
                    "train": "rlcv_lib.tasks.captioning.task:TRAIN_PRESETS"},
    stages=(Stage("mle", "rlcv_lib.tasks.captioning.pretrain:RECIPE",
                  ("model", "world", "train", "captioning")),),
    tune="rlcv_lib.tasks.captioning.tune:tune_and_evaluate",
    notebook="04_captioning",
    check="rlcv_lib.config:require_same_image_size",
)
