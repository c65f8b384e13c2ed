"""Panoptic segmentation (UViM, the paper's Figure 1b), being built: so far ``reward``, the
per-image panoptic quality with panopticapi's rules. The task (stage I and II models, tokens,
notebook ``06_panoptic``) and its registry entry come with the shared UViM code."""
