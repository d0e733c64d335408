"""EmbedAttack: push an encoder's embedding of x + δ away from that of x (paper §3.1)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from typing_extensions import Unpack

from .. import _checks
from ..encoders.base import EncoderOutput
from .base import Attack, AttackOptions, model_output

__all__ = ["EmbedAttack", "embedding_distance"]


def embedding_distance(
    emb: Tensor, ref: Tensor, distance: Literal["l2", "cosine"] = "l2"
) -> Tensor:
    r"""Per-sample distance between embeddings (B, D) or token sets (B, N, D).

    ``"l2"``: :math:`\lVert e - r \rVert_2^2` summed over every token and channel.
    ``"cosine"``: :math:`1 - \cos(e, r)` per token, averaged over tokens.
    Computed in at least float32.

    Returns:
        (B,) distances.
    """
    if emb.dtype.itemsize < 4:
        emb = emb.float()
    ref = ref.to(emb.dtype)
    if distance == "l2":
        return (emb - ref).pow(2).flatten(1).sum(1)
    cos = F.cosine_similarity(emb, ref, dim=-1, eps=1e-8)
    return (1 - cos).reshape(cos.shape[0], -1).mean(1)  # (B,) for CLS, (B, N) for tokens


class EmbedAttack(Attack):
    r"""Task-agnostic attack in the encoder's embedding space (paper §3.1).

    Maximizes :math:`\lVert f(x+\delta) - f(x) \rVert_2^2` (``distance="l2"``) or
    :math:`1 - \cos(f(x+\delta), f(x))` (``distance="cosine"``, as in DeACL) where ``f`` is the
    CLS embedding (``tokens="cls"``, sparse tasks) or all patch tokens (``tokens="patch"``,
    dense tasks). The clean embedding :math:`f(x)` is computed once per call without gradients,
    or passed as ``target``. Without a target the attack needs its random start (the
    distance has zero gradient at δ = 0): ``random_start=False`` is then refused. There is no
    success criterion, so ``early_stop=True`` is refused too. The examples depend only on the
    encoder and the images, so one attack serves every downstream head. With
    ``schedule="apgd"`` the step size adapts per sample (APGD); the per-sample damage
    (:meth:`damage`, for :class:`~ssl_robust.attacks.Ensemble`) is the distance itself.

    Args:
        encoder: an :class:`~ssl_robust.encoders.Encoder` (returns EncoderOutput) or any
            callable that maps images in [0, 1] to a (B, D) or (B, N, D) tensor.
        tokens: ``"cls"`` or ``"patch"``; with a tensor-returning callable it states which
            shape to expect ((B, D) or (B, N, D)).
        distance: ``"l2"`` (squared Euclidean) or ``"cosine"``.
        **kwargs: the options of :class:`~ssl_robust.attacks.Attack`.

    Shape:
        - images: (B, C, H, W) in [0, 1]; target (optional): clean embeddings (B, D) /
          (B, N, D) or an EncoderOutput.

    Example:
        >>> import torch
        >>> from ssl_robust.attacks import EmbedAttack
        >>> from ssl_robust.encoders import VisionTransformer
        >>> enc = VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2)
        >>> x = torch.rand(2, 3, 16, 16)
        >>> res = EmbedAttack(enc, steps=3, generator=torch.Generator().manual_seed(0)).run(x)
        >>> res.loss.shape, res.success is None
        (torch.Size([2]), True)
    """

    task: ClassVar[str | None] = "embedding"

    def __init__(
        self,
        encoder: nn.Module | Callable[[Tensor], Any],
        *,
        tokens: Literal["cls", "patch"] = "cls",
        distance: Literal["l2", "cosine"] = "l2",
        **kwargs: Unpack[AttackOptions],
    ) -> None:
        super().__init__(encoder, **kwargs)
        self.tokens = _checks.check_choice("tokens", tokens, ("cls", "patch"))
        self.distance = _checks.check_choice("distance", distance, ("l2", "cosine"))

    def embed(self, output: Any) -> Tensor:
        """The embedding the attack works on, from an encoder output."""
        if isinstance(output, EncoderOutput):
            return output.cls if self.tokens == "cls" else output.patches
        if isinstance(output, Tensor):
            expected = 2 if self.tokens == "cls" else 3
            if output.ndim != expected:
                layout = "(B, D)" if expected == 2 else "(B, N, D)"
                raise _checks.SSLRobustValueError(
                    f"EmbedAttack(tokens={self.tokens!r}) expects the model to return {layout}; "
                    f"got shape {tuple(output.shape)} — set tokens="
                    f"{'patch' if output.ndim == 3 else 'cls'!r} to match your model"
                )
            return output
        raise _checks.SSLRobustTypeError(
            "EmbedAttack needs an Encoder (returning EncoderOutput) or a callable returning a "
            f"tensor (B, D) / (B, N, D); the model returned {type(output).__name__}"
        )

    def prepare_target(self, images: Tensor, target: Any) -> Tensor:
        if target is None:
            if not self.random_start and self.steps > 0 and self.eps > 0:
                raise _checks.SSLRobustValueError(
                    "EmbedAttack(random_start=False) cannot move without a target: the "
                    "distance to the clean embedding f(x) is at its minimum at δ = 0, where "
                    "its gradient is exactly zero, so every step would be zero. Use "
                    "random_start=True (the paper's setting; pass a torch.Generator for "
                    "determinism) or pass other target embeddings"
                )
            model = _checks.unwrap_distributed(self.model)
            with torch.no_grad():
                return self.embed(model_output(model(images))).detach()
        ref = self.embed(target).detach()
        if ref.shape[0] != images.shape[0]:
            raise _checks.SSLRobustValueError(
                f"target embeddings must have one row per image ({images.shape[0]}); got shape "
                f"{tuple(ref.shape)}"
            )
        return ref.to(images.device)

    def check_output(self, output: Any, target: Tensor) -> None:
        emb = self.embed(output)
        if emb.shape != target.shape:
            raise _checks.SSLRobustValueError(
                f"target embeddings must match the encoder's output shape {tuple(emb.shape)}; "
                f"got {tuple(target.shape)}"
            )

    def loss(self, output: Any, target: Tensor, step: int) -> Tensor:
        return embedding_distance(self.embed(output), target, self.distance)  # type: ignore[arg-type]

    def damage(self, output: Any, target: Tensor) -> tuple[Tensor, Tensor]:
        """``(embedding distance to the clean embedding, never broken)`` per sample."""
        dist = self.loss(output, target, 0)
        return dist, torch.zeros_like(dist, dtype=torch.bool)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", tokens={self.tokens!r}, distance={self.distance!r}"
