"""Attacks on classifiers: PGD on the cross-entropy (Madry et al., 2018) and AutoAttack's APGD
with the cross-entropy or the DLR loss, untargeted or targeted (Croce & Hein, 2020)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from typing_extensions import Unpack

from .. import _checks
from ..encoders.base import EncoderOutput
from ..losses.classification import _dlr, _logit_margin, _targeted_dlr
from .base import Attack, AttackOptions, model_output

__all__ = ["APGD", "PGD"]


def _check_logits(name: str, output: Any) -> None:
    if isinstance(output, EncoderOutput):
        raise _checks.SSLRobustTypeError(
            f"{name} needs a model that returns logits (B, num_classes); got an EncoderOutput "
            "— attack TaskModel(encoder, LinearClassifier(...)), or use EmbedAttack for "
            "the encoder itself"
        )
    if not isinstance(output, Tensor) or output.ndim != 2:
        shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise _checks.SSLRobustValueError(
            f"{name} needs a model that returns logits of shape (B, num_classes); got {shape}"
        )


class PGD(Attack):
    r"""Projected gradient descent on the cross-entropy of a classifier.

    Untargeted: maximizes :math:`\mathrm{CE}(f(x+\delta), y)`; success = misclassified.
    Targeted (``targeted=True``): minimizes :math:`\mathrm{CE}(f(x+\delta), y_{target})`;
    success = predicts the target. Paper setting (§3.2): eps 8/255, 20 steps of 2/255, uniform
    random start, which are the defaults.

    Args:
        model: maps images in [0, 1] (B, C, H, W) to logits (B, num_classes), e.g.
            ``TaskModel(encoder, LinearClassifier(...))``.
        targeted: attack towards the given labels instead of away from them.
        **kwargs: the options of :class:`~ssl_robust.attacks.Attack` (eps, step_size, steps,
            norm, random_start, early_stop, select, generator, eval_mode).

    Shape:
        - images: (B, C, H, W) in [0, 1]; target: (B,) int64 labels (required).
        - output: adversarial images (B, C, H, W), same dtype and device.

    Per-sample damage (:meth:`damage`, for :class:`~ssl_robust.attacks.Ensemble`): the logit
    margin :math:`\max_{i \ne y} z_i - z_y`; broken = misclassified.

    Raises:
        ValueError: labels of the wrong length or out of range, images outside [0, 1], eps on
            the 0–255 scale.
        TypeError: missing or non-integer labels, unknown options.

    Example:
        >>> import torch
        >>> from ssl_robust.attacks import PGD
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
        >>> images, labels = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
        >>> attack = PGD(model, eps=8 / 255, steps=10, generator=torch.Generator().manual_seed(0))
        >>> adv = attack(images, labels)
        >>> bool((adv - images).abs().max() <= 8 / 255 + 1e-6)
        True
    """

    task: ClassVar[str | None] = "classification"

    def __init__(
        self,
        model: nn.Module | Callable[[Tensor], Any],
        *,
        targeted: bool = False,
        **kwargs: Unpack[AttackOptions],
    ) -> None:
        super().__init__(model, **kwargs)
        self.targeted = bool(targeted)

    def prepare_target(self, images: Tensor, target: Any) -> Tensor:
        if target is None:
            raise _checks.SSLRobustTypeError(
                "PGD needs labels: call attack(images, labels) with labels of shape "
                f"({images.shape[0]},)"
                + (" (the target classes, since targeted=True)" if self.targeted else "")
            )
        return _checks.check_labels(target, batch=images.shape[0], device=images.device)

    def check_output(self, output: Any, target: Tensor) -> None:
        _check_logits("PGD", output)
        _checks.check_label_range(target, output.shape[1])

    def loss(self, output: Tensor, target: Tensor, step: int) -> Tensor:
        ce = F.cross_entropy(output, target, reduction="none")
        return -ce if self.targeted else ce

    def success(self, output: Tensor, target: Tensor) -> Tensor:
        pred = output.argmax(dim=1)
        return pred == target if self.targeted else pred != target

    def damage(self, output: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """``(margin, misclassified)``: max_{i != y} z_i - z_y and argmax != y per sample.

        ``target`` is the true labels (a targeted PGD cannot judge damage this way)."""
        if self.targeted:
            raise _checks.SSLRobustValueError(
                "PGD(targeted=True) cannot be part of an Ensemble: its labels are target "
                "classes, not the true labels the ensemble judges damage by; use "
                "APGD(loss='dlr', targeted=True), which picks its target classes itself"
            )
        return _logit_margin(output, target), output.argmax(1) != target

    def extra_repr(self) -> str:
        return super().extra_repr() + f", targeted={self.targeted}"


ApgdLoss = Literal["ce", "dlr"]


class APGD(Attack):
    r"""AutoAttack's APGD: the APGD schedule on the cross-entropy or the DLR loss.

    Croce & Hein, ICML 2020. ``loss="ce"``: APGD-CE, maximizes :math:`\mathrm{CE}(f(x+\delta),
    y)`; ``loss="dlr"``: APGD-DLR, maximizes :func:`~ssl_robust.losses.dlr_loss`;
    ``loss="dlr", targeted=True``: APGD-T, maximizes
    :func:`~ssl_robust.losses.targeted_dlr_loss` towards each of the ``n_target_classes``
    classes with the highest clean logits other than the label, one after the other (each
    ``restarts`` times, on the samples still correctly classified). Labels are always the true
    labels; success = misclassified.
    ``select="best"`` keeps the first misclassified iterate, else the one with the largest
    logit margin :math:`\max_{i \ne y} z_i - z_y` (comparable across losses and target
    classes); the APGD schedule itself follows the attack loss.

    Defaults follow AutoAttack's standard version: ``schedule="apgd"`` (first step 2·eps,
    ``step_size`` unused), 100 steps, 1 restart, 9 target classes, eps 8/255 (L∞).

    Args:
        model: maps images in [0, 1] (B, C, H, W) to logits (B, num_classes).
        loss: ``"ce"`` or ``"dlr"`` (needs >= 3 classes; targeted >= 4).
        targeted: APGD-T (only with ``loss="dlr"``).
        n_target_classes: target classes tried by APGD-T (at most num_classes - 1 are used).
        **kwargs: the options of :class:`~ssl_robust.attacks.Attack`; ``steps`` defaults to
            100 and ``schedule`` to ``"apgd"`` here.

    Shape:
        - images: (B, C, H, W) in [0, 1]; target: (B,) int64 true labels (required).

    Raises:
        SSLRobustValueError: unknown loss (with the valid ones), ``targeted=True`` with
            ``loss="ce"``, too few classes for the DLR loss.
        SSLRobustTypeError: missing or non-integer labels, unknown options.

    Example:
        >>> import torch
        >>> from ssl_robust.attacks import APGD
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
        >>> images, labels = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
        >>> gen = torch.Generator().manual_seed(0)
        >>> res = APGD(model, loss="dlr", targeted=True, n_target_classes=3, steps=10,
        ...            generator=gen).run(images, labels)
        >>> bool((res.adversarial - images).abs().max() <= 8 / 255 + 1e-6), res.success.shape
        (True, torch.Size([4]))
    """

    task: ClassVar[str | None] = "classification"

    def __init__(
        self,
        model: nn.Module | Callable[[Tensor], Any],
        *,
        loss: ApgdLoss = "ce",
        targeted: bool = False,
        n_target_classes: int = 9,
        **kwargs: Unpack[AttackOptions],
    ) -> None:
        kwargs.setdefault("steps", 100)
        kwargs.setdefault("schedule", "apgd")
        super().__init__(model, **kwargs)
        self.loss_name = _checks.check_choice("loss", loss, ("ce", "dlr"))
        self.targeted = bool(targeted)
        if self.targeted and self.loss_name != "dlr":
            raise _checks.SSLRobustValueError(
                f"APGD(loss={loss!r}) has no targeted form; targeted=True needs loss='dlr' "
                "(APGD-T, as in AutoAttack) — or use PGD(targeted=True) towards given classes"
            )
        self.n_target_classes = _checks.check_int("n_target_classes", n_target_classes, minimum=1)

    def prepare_target(self, images: Tensor, target: Any) -> tuple[Tensor, Tensor | None]:
        if target is None:
            raise _checks.SSLRobustTypeError(
                "APGD needs the true labels: call attack(images, labels) with labels of shape "
                f"({images.shape[0]},)"
            )
        labels = _checks.check_labels(target, batch=images.shape[0], device=images.device)
        if not self.targeted:
            return labels, None
        # APGD-T: the classes with the highest clean logits other than the label, best first.
        model = _checks.unwrap_distributed(self.model)
        with torch.no_grad():
            logits = model_output(model(images))
        _check_logits("APGD", logits)
        self.check_output(logits, (labels, None))
        ranked = logits.detach().float().scatter(1, labels.unsqueeze(1), -torch.inf)
        k = min(self.n_target_classes, logits.shape[1] - 1)
        return labels, ranked.topk(k, dim=1).indices

    def restart_targets(self, target: tuple[Tensor, Tensor | None]) -> list[Any]:
        labels, ranked = target
        if ranked is None:
            return [target]
        return [(labels, ranked[:, k]) for k in range(ranked.shape[1])]

    def check_output(self, output: Any, target: tuple[Tensor, Tensor | None]) -> None:
        _check_logits("APGD", output)
        need = 4 if self.targeted else 3 if self.loss_name == "dlr" else 2
        if output.shape[1] < need:
            raise _checks.SSLRobustValueError(
                f"APGD(loss={self.loss_name!r}, targeted={self.targeted}) needs logits of at "
                f"least {need} classes; got {output.shape[1]}"
            )
        _checks.check_label_range(target[0], output.shape[1])

    def loss(self, output: Tensor, target: tuple[Tensor, Tensor | None], step: int) -> Tensor:
        labels, target_class = target
        if target_class is not None:
            return _targeted_dlr(output, labels, target_class)
        if self.loss_name == "dlr":
            return _dlr(output, labels)
        return F.cross_entropy(output, labels, reduction="none")

    def success(self, output: Tensor, target: tuple[Tensor, Tensor | None]) -> Tensor:
        return output.argmax(dim=1) != target[0]

    def score(self, output: Tensor, target: tuple[Tensor, Tensor | None]) -> Tensor:
        return _logit_margin(output, target[0])

    def damage(self, output: Tensor, target: tuple[Tensor, Tensor | None]) -> tuple[Tensor, Tensor]:
        """``(margin, misclassified)``, as :meth:`PGD.damage`."""
        return _logit_margin(output, target[0]), output.argmax(1) != target[0]

    def extra_repr(self) -> str:
        return super().extra_repr() + (
            f", loss={self.loss_name!r}, targeted={self.targeted}, "
            f"n_target_classes={self.n_target_classes}"
        )
