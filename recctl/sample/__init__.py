"""Synthetic fashion-shop data: a raw shop export with planted, recoverable structure.

``python -m recctl.sample OUT_DIR [--seed N]`` regenerates it; the committed copy is ``sample_data/``.
``recctl sample OUT --scale 10M`` makes a shop of any size as Parquet instead (``recctl.sample.scale``).
"""

from recctl.sample.generator import generate

__all__ = ["generate"]
