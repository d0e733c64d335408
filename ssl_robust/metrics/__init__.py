"""Task metrics with ``update`` / ``compute`` / ``reset`` and torch.distributed sync."""

from .base import Metric
from .classification import Accuracy
from .depth import DepthMetrics
from .segmentation import MeanIoU

__all__ = ["Accuracy", "DepthMetrics", "MeanIoU", "Metric"]
