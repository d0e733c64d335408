"""Task metrics on torchmetrics' conventions: update, compute (tensors), forward, reset, sync."""

from .base import Metric
from .classification import Accuracy
from .depth import DepthMetrics
from .segmentation import MeanIoU

__all__ = ["Accuracy", "DepthMetrics", "MeanIoU", "Metric"]
