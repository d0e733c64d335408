"""Update rules of the PGD core: how a gradient becomes the next iterate.

A :class:`Schedule` (``FixedStep``: the paper's fixed step; ``APGDStep``: APGD's per-sample
step-size control, Croce & Hein, ICML 2020) starts a fresh per-call :class:`Stepper` that the
one loop of :func:`~ssl_robust.attacks.core.pgd` calls once per step.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from .. import _checks
from .norms import Norm

__all__ = ["SCHEDULES", "APGDStep", "FixedStep", "Schedule", "Stepper", "apgd_checkpoints"]


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    """A (b,) tensor shaped (b, 1, ..., 1) to broadcast against ``like``."""
    return v.view(-1, *([1] * (like.ndim - 1)))


def _clamp_image(x0: Tensor, delta: Tensor) -> Tensor:
    """The perturbation that keeps ``x0 + delta`` inside [0, 1]."""
    return (x0 + delta).clamp(0, 1) - x0


class Stepper(ABC):
    """The per-call state of an update rule: turns a gradient into the next perturbation.

    Made fresh by :meth:`Schedule.start` for each run of the loop, so no state survives
    between calls. State is kept for the whole batch; ``idx`` names the active samples.
    """

    @abstractmethod
    def update(
        self, idx: Tensor | None, x0: Tensor, delta: Tensor, grad: Tensor, loss: Tensor, t: int
    ) -> Tensor:
        """The next perturbation of the active samples, projected and clamped to [0, 1].

        Args:
            idx: indices of the active samples into the batch, or None for all of them.
            x0: (b, ...) their clean images; delta: (b, ...) their current perturbation.
            grad: (b, ...) gradient of the loss at ``x0 + delta``; loss: (b,) that loss.
            t: the step (0-based).
        """


class Schedule(ABC):
    """An update rule of the PGD loop (the step-size control), selected like a :class:`Norm`."""

    name: str

    @abstractmethod
    def start(
        self, delta: Tensor, *, eps: float, step_size: float, steps: int, norm: Norm
    ) -> Stepper:
        """A fresh :class:`Stepper` for one run starting at ``delta`` (B, ...)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class _FixedStepper(Stepper):
    def __init__(self, norm: Norm, eps: float, step_size: float) -> None:
        self.norm, self.eps, self.step_size = norm, eps, step_size

    def update(
        self, idx: Tensor | None, x0: Tensor, delta: Tensor, grad: Tensor, loss: Tensor, t: int
    ) -> Tensor:
        new = self.norm.project(self.norm.step(delta, grad, self.step_size), self.eps)
        return _clamp_image(x0, new)


class FixedStep(Schedule):
    r"""The paper's PGD: :math:`\delta \leftarrow \Pi_\epsilon(\delta + \alpha\,
    \mathrm{step}(\nabla))` with the fixed step ``step_size`` (Madry et al., 2018)."""

    name = "fixed"

    def start(
        self, delta: Tensor, *, eps: float, step_size: float, steps: int, norm: Norm
    ) -> Stepper:
        return _FixedStepper(norm, eps, step_size)


def apgd_checkpoints(steps: int) -> list[int]:
    r"""APGD's checkpoints :math:`w_j` for ``steps`` iterations (Croce & Hein, 2020).

    :math:`p_0 = 0`, :math:`p_1 = 0.22`, :math:`p_{j+1} = p_j + \max(p_j - p_{j-1} - 0.03,
    0.06)`, in AutoAttack's integer form: the first interval is ``int(0.22 * steps)``, each
    next one ``int(0.03 * steps)`` shorter down to ``int(0.06 * steps)`` (every length at least
    1). Returns the checkpoints below ``steps``.

    Example:
        >>> apgd_checkpoints(100)[:5]
        [22, 41, 57, 70, 80]
    """
    first, decrease, minimum = (max(int(f * steps), 1) for f in (0.22, 0.03, 0.06))
    out: list[int] = []
    length, w = first, first
    while w < steps:
        out.append(w)
        length = max(length - decrease, minimum)
        w += length
    return out


class _APGDStepper(Stepper):
    """Per-sample APGD state: step size, momentum, best point, checkpoint counters."""

    def __init__(self, rule: APGDStep, delta: Tensor, eps: float, steps: int, norm: Norm) -> None:
        b, dtype, device = delta.shape[0], delta.dtype, delta.device
        self.rule, self.norm, self.eps = rule, norm, eps
        self.checkpoints = set(apgd_checkpoints(steps))
        self.last_check = 0
        self.eta = torch.full((b,), rule.initial * eps, dtype=dtype, device=device)
        self.prev = delta.clone()  # the point the previous step started from (momentum)
        self.best = delta.clone()  # the highest-loss point so far, and its gradient
        self.best_grad = torch.zeros_like(delta)
        self.best_loss = torch.full((b,), -math.inf, dtype=dtype, device=device)
        self.last_loss = torch.full((b,), math.nan, dtype=dtype, device=device)
        self.increases = torch.zeros(b, dtype=torch.long, device=device)
        self.reduced = torch.ones(b, dtype=torch.bool, device=device)  # halved at last check
        self.best_at_check = torch.full((b,), -math.inf, dtype=dtype, device=device)

    def update(
        self, idx: Tensor | None, x0: Tensor, delta: Tensor, grad: Tensor, loss: Tensor, t: int
    ) -> Tensor:
        sel: Tensor | slice = slice(None) if idx is None else idx
        loss = loss.detach().to(self.best_loss.dtype)
        best_loss = self.best_loss[sel]
        better = loss > best_loss
        best = torch.where(_bcast(better, delta), delta, self.best[sel])
        best_grad = torch.where(_bcast(better, delta), grad, self.best_grad[sel])
        best_loss = torch.where(better, loss, best_loss)
        self.best[sel], self.best_grad[sel], self.best_loss[sel] = best, best_grad, best_loss
        increases = self.increases[sel] + (loss > self.last_loss[sel]).long()
        self.last_loss[sel] = loss
        eta = self.eta[sel]
        if t == 0:
            self.best_at_check[sel] = best_loss
        if t in self.checkpoints:
            window = t - self.last_check
            # Condition 1: too few of the steps since the last checkpoint increased the loss.
            # Condition 2: the step was not halved at the last checkpoint and the best loss
            # has not moved since.
            reduce = increases < self.rule.rho * window
            reduce |= ~self.reduced[sel] & (self.best_at_check[sel] >= best_loss)
            self.reduced[sel] = reduce
            self.best_at_check[sel] = best_loss
            increases = torch.zeros_like(increases)
            eta = torch.where(reduce, eta / 2, eta)
            self.eta[sel] = eta
            delta = torch.where(_bcast(reduce, delta), best, delta)
            grad = torch.where(_bcast(reduce, delta), best_grad, grad)
        self.increases[sel] = increases
        if t in self.checkpoints:
            self.last_check = t
        norm, eps = self.norm, self.eps
        z = _clamp_image(x0, norm.project(norm.step(delta, grad, _bcast(eta, delta)), eps))
        moved = delta - self.prev[sel]  # read before the write below (a view when sel is ":")
        self.prev[sel] = delta
        if t == 0:
            return z
        a = self.rule.momentum
        new = norm.project(delta + a * (z - delta) + (1 - a) * moved, eps)
        return _clamp_image(x0, new)


class APGDStep(Schedule):
    r"""APGD's update rule: per-sample step-size control with momentum (Croce & Hein, 2020).

    Per sample: :math:`z = \Pi(x_t + \eta\,\mathrm{step}(\nabla))`,
    :math:`x_{t+1} = \Pi(x_t + \alpha(z - x_t) + (1-\alpha)(x_t - x_{t-1}))` (plain step at
    t = 0), starting from :math:`\eta = ` ``initial`` · eps (2·eps for L∞ and L2; the attack's
    ``step_size`` is not used). At each checkpoint of :func:`apgd_checkpoints` the step is
    halved and the iterate reset to the highest-loss point so far when fewer than a fraction
    ``rho`` of the steps since the last checkpoint increased the loss, or when the step was not
    halved at the last checkpoint and the best loss has not increased since. APGD judges
    progress by the attack loss, whatever ``select`` returns.

    Args:
        initial: first step as a multiple of eps.
        momentum: weight α of the new step (0.75).
        rho: the fraction ρ of increasing steps below which the step is halved (0.75).
    """

    name = "apgd"

    def __init__(self, *, initial: float = 2.0, momentum: float = 0.75, rho: float = 0.75) -> None:
        self.initial = _checks.check_positive_float("initial", initial)
        self.momentum = _checks.check_positive_float("momentum", momentum)
        self.rho = _checks.check_positive_float("rho", rho)

    def start(
        self, delta: Tensor, *, eps: float, step_size: float, steps: int, norm: Norm
    ) -> Stepper:
        return _APGDStepper(self, delta, eps, steps, norm)

    def __repr__(self) -> str:
        return f"APGDStep(initial={self.initial}, momentum={self.momentum}, rho={self.rho})"


#: The registered update rules, by the name attacks accept in ``schedule=``.
SCHEDULES: dict[str, Schedule] = {"fixed": FixedStep(), "apgd": APGDStep()}
