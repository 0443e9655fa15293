"""Numpy trainer for binarized MLPs (:func:`train`) and the seed-000 comparison table."""

from .network import MLP, MODES
from .presets import PRESETS, Preset, get_preset
from .trainer import TrainResult, train

__all__ = ["MLP", "MODES", "PRESETS", "Preset", "TrainResult", "get_preset", "train"]
