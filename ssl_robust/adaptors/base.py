"""The adaptor contract and the TaskModel that joins an encoder and a head."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from .. import _checks
from ..encoders.base import Encoder, EncoderOutput

__all__ = ["Adaptor", "TaskModel"]


class Adaptor(nn.Module):
    """Base class of the downstream heads.

    A head maps the encoder's :class:`~ssl_robust.encoders.EncoderOutput` to the task output.
    ``size`` is the (H, W) of the input images, so dense heads can return pixel-resolution
    outputs; sparse heads ignore it.
    """

    task: str = ""

    def forward(self, features: EncoderOutput, size: tuple[int, int]) -> Tensor:
        raise NotImplementedError

    def __call__(self, features: EncoderOutput, size: tuple[int, int]) -> Tensor:
        out: Tensor = super().__call__(features, size)
        return out


class TaskModel(nn.Module):
    """An encoder followed by a head: images in [0, 1] → task output.

    This is the model every task attack (PGD, SegPGD, DepthPGD) and every metric sees. Dense
    heads return outputs at the input resolution.

    Args:
        encoder: an :class:`~ssl_robust.encoders.Encoder`.
        adaptor: a head such as :class:`~ssl_robust.adaptors.LinearClassifier`.

    Example:
        >>> import torch
        >>> from ssl_robust.adaptors import LinearClassifier, TaskModel
        >>> from ssl_robust.encoders import VisionTransformer
        >>> enc = VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2)
        >>> model = TaskModel(enc, LinearClassifier(16, 10))
        >>> model(torch.rand(2, 3, 16, 16)).shape
        torch.Size([2, 10])
    """

    def __init__(self, encoder: Encoder, adaptor: Adaptor) -> None:
        super().__init__()
        if not isinstance(encoder, Encoder):
            raise _checks.SSLRobustTypeError(
                f"encoder must be an ssl_robust Encoder; got {type(encoder).__name__} — wrap "
                "your model with ssl_robust.encoders.wrap(model)"
            )
        if not isinstance(adaptor, Adaptor):
            raise _checks.SSLRobustTypeError(
                f"adaptor must be an ssl_robust Adaptor; got {type(adaptor).__name__}"
            )
        in_dim = getattr(adaptor, "embed_dim", None)
        if in_dim is not None and in_dim != encoder.embed_dim:
            raise _checks.SSLRobustValueError(
                f"the adaptor expects embeddings of width {in_dim} but the encoder produces "
                f"{encoder.embed_dim}"
            )
        self.encoder = encoder
        self.adaptor = adaptor

    def forward(self, images: Tensor) -> Tensor:
        features = self.encoder(images)
        return self.adaptor(features, (int(images.shape[-2]), int(images.shape[-1])))

    def __call__(self, images: Tensor) -> Any:
        return super().__call__(images)
