"""Synthetic fashion-shop data: a raw shop export with planted, recoverable structure.

``python -m recctl.sample OUT_DIR [--seed N]`` regenerates it; the committed copy is ``sample_data/``.
"""

from recctl.sample.generator import generate

__all__ = ["generate"]
