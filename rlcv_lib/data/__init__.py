"""Data: the scenes world, its TFDS builder, real-dataset adapters and the input pipeline.

Importing this package imports NumPy only; TFDS, pycocotools and PIL are imported lazily by
the modules that need them (the GPU image has no TFDS).
"""
