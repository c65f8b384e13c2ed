"""The task-agnostic core: the Task protocol, sampling, REINFORCE, steps, the trainer, and the
shared MLE, tuning and evaluation layers every task builds on (docs/design.md §2, §7)."""
