"""rlcv: tuning computer vision models with task rewards, reproduced (Susano Pinto et al., 2023).

Modules: ``config`` (presets), ``data`` (the scenes world and real-dataset adapters), ``models``
(ViT encoder + autoregressive decoder), ``sampling``, ``reinforce``, ``train``, ``tasks``,
``notebook`` (the conventions every notebook follows) and ``results`` (figures/results.json).
"""

__version__ = "0.1.0"
