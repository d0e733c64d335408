"""The encoder contract: images in [0, 1] in, CLS embedding and patch tokens out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .. import _checks

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Encoder", "EncoderOutput"]

#: ImageNet statistics used by DINO and DINOv2 (and most ViTs).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EncoderOutput:
    """What every :class:`Encoder` returns.

    Attributes:
        cls: (B, D) the CLS embedding.
        patches: (B, N, D) the patch tokens, N = h * w, row-major over the patch grid.
        grid: (h, w) the patch grid, so ``patches`` reshapes to (B, h, w, D).
    """

    cls: Tensor
    patches: Tensor
    grid: tuple[int, int]

    def patch_map(self) -> Tensor:
        """Patch tokens as a (B, D, h, w) feature map, the layout dense heads consume."""
        b, _, d = self.patches.shape
        h, w = self.grid
        return self.patches.transpose(1, 2).reshape(b, d, h, w)

    def __getitem__(self, index: Tensor | slice | int) -> EncoderOutput:
        """Select samples of the batch (keeps the batch dimension for int indices)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return EncoderOutput(self.cls[index], self.patches[index], self.grid)

    def detach(self) -> EncoderOutput:
        return EncoderOutput(self.cls.detach(), self.patches.detach(), self.grid)


class Encoder(nn.Module):
    """Base class of the encoders: takes images in [0, 1] and normalizes them itself.

    Subclasses implement :meth:`forward_features`, which receives normalized images. The
    normalization (``(x - mean) / std``) lives here so that attacks and users always work on the
    [0, 1] image scale where eps = 8/255 means what it says.

    Args:
        embed_dim: width D of the CLS and patch embeddings.
        patch_size: side of a square patch in pixels.
        mean: per-channel mean used to normalize.
        std: per-channel standard deviation used to normalize.
    """

    embed_dim: int
    patch_size: int

    def __init__(
        self,
        *,
        embed_dim: int,
        patch_size: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.embed_dim = _checks.check_int("embed_dim", embed_dim, minimum=1)
        self.patch_size = _checks.check_int("patch_size", patch_size, minimum=1)
        # Explicit CPU: the statistics stay real even when the model is built under
        # ``torch.device("meta")`` (checkpoint loading skips the random initialization).
        # Stored in float64: ``normalize`` casts them to the images' dtype, so float32 runs see
        # the same values as before and float64 runs the exact constants (``.float()`` /
        # ``.half()`` convert them like every buffer).
        mean_t = torch.as_tensor(mean, dtype=torch.float64, device="cpu")
        std_t = torch.as_tensor(std, dtype=torch.float64, device="cpu")
        if mean_t.ndim != 1 or std_t.shape != mean_t.shape:
            raise _checks.SSLRobustValueError(
                f"mean and std must be sequences of one value per channel; got mean "
                f"{tuple(mean_t.shape)} and std {tuple(std_t.shape)}"
            )
        if bool((std_t <= 0).any()):
            raise _checks.SSLRobustValueError(f"std must be > 0; got {std_t.tolist()}")
        self.in_chans = int(mean_t.numel())
        # Non-persistent: they are not part of official checkpoints.
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std_t.view(1, -1, 1, 1), persistent=False)

    def normalize(self, images: Tensor) -> Tensor:
        """``(images - mean) / std`` in the dtype of ``images``."""
        mean = self.get_buffer("mean").to(dtype=images.dtype)
        std = self.get_buffer("std").to(dtype=images.dtype)
        return (images - mean) / std

    def forward(self, images: Tensor) -> EncoderOutput:
        """Encode images in [0, 1] of shape (B, C, H, W)."""
        _checks.check_image_tensor(images, channels=self.in_chans)
        _checks.check_finite_images(images)
        return self.forward_features(self.normalize(images))

    def forward_features(self, x: Tensor) -> EncoderOutput:
        """Encode already normalized images. Subclasses implement this."""
        raise NotImplementedError

    def __call__(self, images: Tensor) -> EncoderOutput:  # typed call for mypy users
        out: EncoderOutput = super().__call__(images)
        return out
