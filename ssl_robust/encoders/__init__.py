"""Encoders: images in [0, 1] → CLS embedding + patch tokens (normalization inside)."""

from .base import IMAGENET_MEAN, IMAGENET_STD, Encoder, EncoderOutput
from .checkpoints import WeightsDownloadError, read_checkpoint
from .registry import (
    EncoderSpec,
    create_encoder,
    encoder_origin,
    encoder_spec,
    list_encoders,
    register_encoder,
)
from .vit import VisionTransformer
from .wrappers import WrappedEncoder, wrap

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Encoder",
    "EncoderOutput",
    "EncoderSpec",
    "VisionTransformer",
    "WeightsDownloadError",
    "WrappedEncoder",
    "create_encoder",
    "encoder_origin",
    "encoder_spec",
    "list_encoders",
    "read_checkpoint",
    "register_encoder",
    "wrap",
]
