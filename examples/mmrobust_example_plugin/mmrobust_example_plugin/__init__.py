"""An example plugin for mmrobust-bench: one defense, added through the ``mmrobust_bench.defenses`` entry point."""
from .label_smoothing import LabelSmoothingJT

__all__ = ["LabelSmoothingJT"]
