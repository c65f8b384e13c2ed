"""rlcv: tuning computer vision models with task rewards, reproduced (Susano Pinto et al., 2023).

Packages: ``core`` (the Task protocol, sampling, REINFORCE, the pure steps, the trainer, and the
shared MLE, tuning, evaluation and shipped-checkpoint layers), ``tasks`` (one package per task
and the registry), ``models`` (ViT encoder + autoregressive decoder), ``data`` (the scenes world
and real-dataset adapters). Modules: ``config`` (presets), ``cli`` (``python -m rlcv_lib``),
``notebook`` (the conventions every notebook follows), ``results`` (figures/results.json),
``reproduce``. The design: ``docs/design.md``.
"""

__version__ = "0.1.0"
