"""Linear classification head on the CLS embedding (paper §4.1)."""

from __future__ import annotations

from torch import Tensor, nn

from .. import _checks
from ..encoders.base import EncoderOutput
from .base import Adaptor

__all__ = ["LinearClassifier"]


class LinearClassifier(Adaptor):
    """``Linear(embed_dim, num_classes)`` on the CLS embedding.

    Args:
        embed_dim: width D of the encoder's embedding.
        num_classes: number of classes C (>= 1).

    Shape:
        - Input: EncoderOutput with cls (B, D).
        - Output: logits (B, C).

    Example:
        >>> import torch
        >>> from ssl_robust.encoders import EncoderOutput
        >>> head = LinearClassifier(8, 3)
        >>> feats = EncoderOutput(torch.randn(2, 8), torch.randn(2, 4, 8), (2, 2))
        >>> head(feats, (16, 16)).shape
        torch.Size([2, 3])
    """

    task = "classification"

    def __init__(self, embed_dim: int, num_classes: int) -> None:
        super().__init__()
        self.embed_dim = _checks.check_int("embed_dim", embed_dim, minimum=1)
        self.num_classes = _checks.check_int("num_classes", num_classes, minimum=1)
        self.linear = nn.Linear(embed_dim, num_classes)
        nn.init.normal_(self.linear.weight, std=0.01)
        nn.init.zeros_(self.linear.bias)

    def forward(self, features: EncoderOutput, size: tuple[int, int]) -> Tensor:
        cls = features.cls
        if cls.ndim != 2 or cls.shape[1] != self.embed_dim:
            raise _checks.SSLRobustValueError(
                f"LinearClassifier expects CLS embeddings of shape (B, {self.embed_dim}); got "
                f"{tuple(cls.shape)}"
            )
        out: Tensor = self.linear(cls)
        return out
