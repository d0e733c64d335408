"""Encoders: images in [0, 1] → CLS embedding + patch tokens (normalization inside)."""

from .base import IMAGENET_MEAN, IMAGENET_STD, Encoder, EncoderOutput
from .vit import VisionTransformer

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Encoder", "EncoderOutput", "VisionTransformer"]
