"""UViM's shared code (docs/design.md §10.2), used by the panoptic and colorization tasks: stage
I training and evaluation (``stage1``) around the VQ-VAE of :mod:`rlcv_lib.models.vqvae`, and
stage II, the code generator with the frozen stage I as its detokenizer and reward
(``stage2``), the loader of big_vision's released UViM checkpoints (``released``) and the
tuning curves' figure (``figures``). Not a task itself (no ``SPEC``): the
tasks that build on it declare their stages."""
