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
        encoder: an :class:`~ssl_robust.encoders.Encoder`, also ``torch.compile``-d or wrapped
            in ``DistributedDataParallel``/``DataParallel`` (the wrapper runs the forward).
        adaptor: a head such as :class:`~ssl_robust.adaptors.LinearClassifier` (also compiled
            or wrapped).

    Example:
        >>> import torch
        >>> from ssl_robust.adaptors import LinearClassifier, TaskModel
        >>> from ssl_robust.encoders import VisionTransformer
        >>> enc = VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2)
        >>> model = TaskModel(enc, LinearClassifier(16, 10))
        >>> model(torch.rand(2, 3, 16, 16)).shape
        torch.Size([2, 10])
    """

    def __init__(self, encoder: Encoder | nn.Module, adaptor: Adaptor | nn.Module) -> None:
        super().__init__()
        inner_encoder = _checks.inner_module(encoder)
        inner_adaptor = _checks.inner_module(adaptor)
        if not isinstance(inner_encoder, Encoder):
            raise _checks.SSLRobustTypeError(
                f"encoder must be an ssl_robust Encoder (or a compiled / DDP-wrapped one); got "
                f"{type(inner_encoder).__name__} — wrap your model with "
                "ssl_robust.encoders.wrap(model)"
            )
        if not isinstance(inner_adaptor, Adaptor):
            raise _checks.SSLRobustTypeError(
                f"adaptor must be an ssl_robust Adaptor; got {type(inner_adaptor).__name__}"
            )
        in_dim = getattr(inner_adaptor, "embed_dim", None)
        if in_dim is not None and in_dim != inner_encoder.embed_dim:
            raise _checks.SSLRobustValueError(
                f"the adaptor expects embeddings of width {in_dim} but the encoder produces "
                f"{inner_encoder.embed_dim}"
            )
        self.encoder: Encoder = encoder  # type: ignore[assignment]
        self.adaptor: Adaptor = adaptor  # type: ignore[assignment]

    @property
    def task(self) -> str:
        """The head's task (``"classification"``, ``"segmentation"`` or ``"depth"``)."""
        return str(getattr(_checks.inner_module(self.adaptor), "task", ""))

    def forward(self, images: Tensor) -> Tensor:
        features = self.encoder(images)
        return self.adaptor(features, (int(images.shape[-2]), int(images.shape[-1])))

    def __call__(self, images: Tensor) -> Any:
        return super().__call__(images)
