"""Downstream heads (adaptors) and the TaskModel joining them to an encoder."""

from .base import Adaptor, TaskModel
from .classification import LinearClassifier
from .depth import LinearDepther, feature_view
from .segmentation import LinearSegmenter, SlidingWindow, sliding_window_inference
from .training import PRESETS, FitPreset, fit

__all__ = [
    "PRESETS",
    "Adaptor",
    "FitPreset",
    "LinearClassifier",
    "LinearDepther",
    "LinearSegmenter",
    "SlidingWindow",
    "TaskModel",
    "feature_view",
    "fit",
    "sliding_window_inference",
]
