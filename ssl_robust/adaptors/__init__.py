"""Downstream heads (adaptors) and the TaskModel joining them to an encoder."""

from .base import Adaptor, TaskModel
from .classification import LinearClassifier

__all__ = ["Adaptor", "LinearClassifier", "TaskModel"]
