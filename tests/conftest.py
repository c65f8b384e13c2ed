"""Test-wide settings: headless matplotlib, JAX on the CPU."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
