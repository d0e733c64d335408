"""Task metrics with ``update`` / ``compute`` / ``reset`` and torch.distributed sync."""

from .base import Metric
from .classification import Accuracy

__all__ = ["Accuracy", "Metric"]
