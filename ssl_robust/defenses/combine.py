"""Multi-perturbation combinations (Tramèr & Boneh, NeurIPS 2019): avg, max, random."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from .. import _checks

__all__ = ["COMBINES", "Combine", "combine_losses", "pick_random"]

#: How the perturbations of one step are combined.
Combine = Literal["avg", "max", "random"]
COMBINES: tuple[str, ...] = ("avg", "max", "random")


def combine_losses(
    adversarial: Sequence[Tensor], clean: Sequence[Tensor] | None = None, *, how: str = "avg"
) -> Tensor:
    """Combine per-sample adversarial losses (each (B,)) of several perturbations.

    ``"avg"``: the mean over perturbations of each one's batch-mean loss.
    ``"max"``: per sample, the perturbation whose loss rose most over its clean loss
    (``adversarial[k][i] - clean[k][i]``, since raw losses of different objectives differ in
    scale), then the batch mean of the chosen losses; ties go to the first perturbation.
    ``"random"`` is decided before the attacks run (:func:`pick_random`): here it is ``avg``
    over the one perturbation given.

    Example:
        >>> import torch
        >>> adv = [torch.tensor([1.0, 5.0]), torch.tensor([4.0, 2.0])]
        >>> clean = [torch.tensor([0.0, 0.0]), torch.tensor([0.0, 1.5])]
        >>> float(combine_losses(adv, how="avg")), float(combine_losses(adv, clean, how="max"))
        (3.0, 4.5)
    """
    _checks.check_choice("combine", how, COMBINES)
    if not adversarial:
        raise _checks.SSLRobustValueError("no perturbation to combine")
    if how != "max" or len(adversarial) == 1:
        if len(adversarial) == 1:
            return adversarial[0].mean()
        return torch.stack([a.mean() for a in adversarial]).mean()
    if clean is None or len(clean) != len(adversarial):
        raise _checks.SSLRobustValueError(
            f"combine='max' needs one clean loss per perturbation; got {len(adversarial)} "
            f"adversarial and {0 if clean is None else len(clean)} clean"
        )
    adv = torch.stack(list(adversarial))
    increase = adv.detach() - torch.stack(list(clean)).detach().to(adv.dtype)
    chosen = increase.argmax(0, keepdim=True)
    return adv.gather(0, chosen)[0].mean()


def pick_random(count: int, generator: torch.Generator) -> int:
    """The perturbation trained on this step, uniform over ``count``, from ``generator``.

    Example:
        >>> import torch
        >>> pick_random(3, torch.Generator().manual_seed(0)) in (0, 1, 2)
        True
    """
    gen_device = generator.device
    return int(torch.randint(count, (1,), generator=generator, device=gen_device).item())
