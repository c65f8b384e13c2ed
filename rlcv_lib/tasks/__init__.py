"""Tasks: each supplies a tokenizer, an allowed-token rule, a reward and a metric."""

from rlcv_lib.tasks.base import Task, check_task

__all__ = ["Task", "check_task"]
