"""The toy sorting task that teaches the two steps: ``task`` (:class:`SortTask`) and
``experiment`` (its config section and the MLE-then-REINFORCE run). Notebook:
``02_reward_tuning_toy``."""

from rlcv_lib.tasks import TaskSpec

SPEC = TaskSpec(
    name="toy",
    section="rlcv_lib.tasks.toy.experiment:ToyConfig:TOY_PRESETS",
    notebook="02_reward_tuning_toy",
)
