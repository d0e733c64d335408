"""The shared projected-gradient core: the one PGD loop of ssl_robust.

Every attack of the library (:class:`~ssl_robust.attacks.PGD`, ``SegPGD``, ``DepthPGD``,
:class:`~ssl_robust.attacks.EmbedAttack`) is this loop with a different loss. The loop owns the
random start, the gradient (``torch.autograd.grad`` with respect to the perturbation only), the
step, the projection onto the threat model, the clamp to the image range, the per-sample
best-iterate tracking, the per-sample early stop and the restarts. Threat models are small
:class:`Norm` objects with three hooks (``random_init``, ``step``, ``project``), as in foolbox;
update rules are small :class:`Schedule` objects (:class:`FixedStep`, the paper's PGD, and
:class:`APGDStep`, APGD's per-sample step-size control) that turn a gradient into the next
iterate.

Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018.
Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020 (APGD).
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

import torch
from torch import Tensor

from .. import _checks

__all__ = [
    "L2",
    "NORMS",
    "SCHEDULES",
    "APGDStep",
    "AttackResult",
    "FixedStep",
    "Linf",
    "LossFn",
    "Norm",
    "Schedule",
    "SeededStart",
    "Stepper",
    "apgd_checkpoints",
    "pgd",
]

NormName = Literal["linf", "l2"]
Select = Literal["best", "last"]
ScheduleName = Literal["fixed", "apgd"]

#: ``loss_fn(x_active, active_idx, step)`` returns ``(loss, success)`` or
#: ``(loss, success, score)``; each is a (b,) tensor over the active samples (success bool, or
#: None when the attack has no success criterion; score: what ``select="best"`` maximizes,
#: the loss when omitted or None).
LossFn = Callable[
    [Tensor, Tensor, int],
    tuple[Tensor, Tensor | None] | tuple[Tensor, Tensor | None, Tensor | None],
]


@dataclass(frozen=True)
class AttackResult:
    """What an attack returns.

    Attributes:
        adversarial: adversarial images, same shape, dtype and device as the input, in [0, 1]
            and inside the eps-ball around the input exactly in that dtype (checked in
            float64, no tolerance; fp16/bf16 values are rounded toward the clean image).
        loss: (B,) the attack loss at the returned images.
        success: (B,) bool, whether the attack succeeded on each sample (e.g. misclassified),
            or None for attacks without a success criterion (EmbedAttack).
        steps: (B,) int64, gradient steps actually run per sample (fewer than ``steps`` for
            samples stopped early).
    """

    adversarial: Tensor
    loss: Tensor
    success: Tensor | None
    steps: Tensor


class Norm(ABC):
    """A threat model: the three hooks the PGD loop needs.

    Subclasses implement ``random_init`` (a start drawn uniformly from the ball), ``step`` (the
    steepest-ascent step for this norm) and ``project`` (back onto the ball). All work per
    sample on (B, ...) tensors and keep the dtype of their input.
    """

    name: str

    @abstractmethod
    def random_init(self, like: Tensor, eps: float, generator: torch.Generator | None) -> Tensor:
        """Draw a perturbation uniformly from the eps-ball, shaped like ``like``."""

    @abstractmethod
    def step(self, delta: Tensor, grad: Tensor, step_size: float | Tensor) -> Tensor:
        """Move ``delta`` by ``step_size`` in the steepest-ascent direction of ``grad``.

        ``step_size`` is a float, or a (B, 1, ..., 1) tensor of per-sample steps (APGD).
        """

    @abstractmethod
    def project(self, delta: Tensor, eps: float) -> Tensor:
        """Project ``delta`` onto the eps-ball."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _rand(
    kind: Literal["uniform", "normal"], like: Tensor, generator: torch.Generator | None
) -> Tensor:
    """Random numbers shaped like ``like`` from ``generator`` (never the global RNG)."""
    device = generator.device if generator is not None else like.device
    if generator is None:
        generator = torch.Generator(device=device)
        generator.seed()  # non-deterministic seed; the global RNG is not touched
    if kind == "uniform":
        out = torch.rand(like.shape, generator=generator, device=device, dtype=torch.float32)
    else:
        out = torch.randn(like.shape, generator=generator, device=device, dtype=torch.float32)
    return out.to(device=like.device, dtype=like.dtype)


def _per_sample_norm(t: Tensor) -> Tensor:
    """L2 norm of each sample, shaped (B, 1, ..., 1) for broadcasting."""
    work = t if t.dtype == torch.float64 else t.float()
    flat: Tensor = torch.linalg.vector_norm(work.flatten(1), dim=1)
    return flat.view(-1, *([1] * (t.ndim - 1))).to(t.dtype)


class Linf(Norm):
    """The L∞ threat model: ‖δ‖∞ ≤ eps, signed-gradient steps."""

    name = "linf"

    def random_init(self, like: Tensor, eps: float, generator: torch.Generator | None) -> Tensor:
        return (_rand("uniform", like, generator) * 2 - 1) * eps

    def step(self, delta: Tensor, grad: Tensor, step_size: float | Tensor) -> Tensor:
        return delta + step_size * grad.sign()

    def project(self, delta: Tensor, eps: float) -> Tensor:
        return delta.clamp(-eps, eps)


class L2(Norm):
    """The L2 threat model: ‖δ‖₂ ≤ eps per sample, normalized-gradient steps."""

    name = "l2"

    def random_init(self, like: Tensor, eps: float, generator: torch.Generator | None) -> Tensor:
        if like.shape[0] == 0:
            return torch.zeros_like(like)
        direction = _rand("normal", like, generator)
        direction = direction / _per_sample_norm(direction).clamp_min(1e-12)
        dim = like[0].numel()
        u = _rand("uniform", like.new_empty(like.shape[0]), generator)
        radius = eps * u.float().pow(1.0 / dim).to(like.dtype)
        return direction * radius.view(-1, *([1] * (like.ndim - 1)))

    def step(self, delta: Tensor, grad: Tensor, step_size: float | Tensor) -> Tensor:
        return delta + step_size * grad / _per_sample_norm(grad).clamp_min(1e-12)

    def project(self, delta: Tensor, eps: float) -> Tensor:
        factor = (eps / _per_sample_norm(delta).clamp_min(1e-12)).clamp(max=1.0)
        return delta * factor


class SeededStart(Norm):
    """A threat model whose random start is drawn per sample from its own seed.

    Wraps a :class:`~ssl_robust.attacks.Norm` (same ``step``/``project``); ``random_init``
    draws sample ``i``'s start with ``torch.Generator().manual_seed(seeds[i])``, so a sample
    gets the same start whatever batch (or rank) it falls in. With ``restarts > 1`` the later
    restarts run on the samples still unbroken, which this object cannot identify: their starts
    are seeded from the whole batch (deterministic, but they depend on the batch composition).

    Example:
        >>> import torch
        >>> from ssl_robust.attacks import Linf, SeededStart
        >>> like = torch.zeros(3, 1, 2, 2)
        >>> a = SeededStart(Linf(), [7, 8, 9]).random_init(like, 0.1, None)
        >>> b = SeededStart(Linf(), [8]).random_init(like[:1], 0.1, None)
        >>> torch.equal(a[1:2], b)
        True
    """

    def __init__(self, base: Norm, seeds: list[int]) -> None:
        self.base = base
        self.name = base.name
        self.seeds = list(seeds)
        self.calls = 0

    def random_init(self, like: Tensor, eps: float, generator: torch.Generator | None) -> Tensor:
        self.calls += 1
        salt = 0 if self.calls == 1 else self.calls * 0x9E3779B97F4A7C15
        if like.shape[0] != len(self.seeds):
            # A restart on the samples left (restarts > 1): which ones is not known here, so
            # this start depends on the batch's composition (still seeded, deterministic).
            mixed = hash((tuple(self.seeds), self.calls, like.shape[0])) & ((1 << 63) - 1)
            return self.base.random_init(like, eps, torch.Generator().manual_seed(mixed))
        parts = [
            self.base.random_init(
                like[i : i + 1], eps, torch.Generator().manual_seed((s ^ salt) & ((1 << 63) - 1))
            )
            for i, s in enumerate(self.seeds)
        ]
        return torch.cat(parts) if parts else torch.zeros_like(like)

    def subset(self, idx: Tensor | list[int]) -> SeededStart:
        """The same threat model for the samples ``idx`` of the batch, with their seeds.

        :class:`~ssl_robust.attacks.Ensemble` runs its later members on the samples still
        unbroken; with this their starts stay the ones of their own seeds.
        """
        rows = idx.tolist() if isinstance(idx, Tensor) else list(idx)
        return SeededStart(self.base, [self.seeds[int(i)] for i in rows])

    def step(self, delta: Tensor, grad: Tensor, step_size: float | Tensor) -> Tensor:
        return self.base.step(delta, grad, step_size)

    def project(self, delta: Tensor, eps: float) -> Tensor:
        return self.base.project(delta, eps)


#: The registered threat models, by the name attacks accept in ``norm=``.
NORMS: dict[str, Norm] = {"linf": Linf(), "l2": L2()}


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


def _work_dtype(images: Tensor) -> torch.dtype:
    """The dtype of the perturbation, the best iterate and the losses (float32 at least)."""
    return torch.float64 if images.dtype == torch.float64 else torch.float32


def _model_input(x: Tensor, clean: Tensor, dtype: torch.dtype) -> Tensor:
    """``x`` (work dtype) in the images' ``dtype``, each value rounded toward ``clean``.

    Rounding to the nearest fp16/bf16 value can step out of the eps-ball or past the clean
    image by one ulp; rounding toward the clean image never does (each coordinate of the
    perturbation only shrinks), so what the model sees, and what the attack returns, is inside
    the ball and [0, 1] in the images' own dtype. The gradient flows through the cast.
    """
    if x.dtype == dtype:
        return x
    q = x.to(dtype)
    with torch.no_grad():
        qd = q.detach()
        away = (qd.to(x.dtype) - clean).abs() > (x.detach() - clean).abs()
        fixed = torch.where(away, torch.nextafter(qd, clean.to(dtype)), qd)
    return q + (fixed - qd)  # equals ``fixed`` exactly; differentiable through ``q``


def _unpack(out: object, b: int) -> tuple[Tensor, Tensor | None, Tensor]:
    """Validate what a loss callback returned; returns (loss, success, score)."""
    if not isinstance(out, tuple) or len(out) not in (2, 3):
        raise _checks.SSLRobustTypeError(
            "loss_fn must return (loss, success) or (loss, success, score); got "
            f"{type(out).__name__}"
        )
    loss, success = out[0], out[1]
    score = out[2] if len(out) == 3 else None
    if not isinstance(loss, Tensor) or loss.shape != (b,):
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise _checks.SSLRobustValueError(
            f"the attack loss must be per sample with shape ({b},); got {shape} — "
            "use reduction='none' and reduce every dimension but the batch"
        )
    if success is not None and (not isinstance(success, Tensor) or success.shape != (b,)):
        raise _checks.SSLRobustValueError(
            f"success must be a bool tensor of shape ({b},) or None; got {success!r:.80}"
        )
    if score is None:
        score = loss
    elif not isinstance(score, Tensor) or score.shape != (b,):
        raise _checks.SSLRobustValueError(f"score must be a tensor of shape ({b},) or None")
    return loss, (None if success is None else success.detach().bool()), score.detach()


class _Tracker:
    """Per-sample best iterate: the first successful one, else the highest score."""

    def __init__(self, start: Tensor, dtype: torch.dtype) -> None:
        b = start.shape[0]
        self.x = start.clone()
        self.loss = torch.full((b,), math.nan, dtype=dtype, device=start.device)
        self.score = torch.full((b,), -math.inf, dtype=dtype, device=start.device)
        self.success = torch.zeros(b, dtype=torch.bool, device=start.device)
        self.has_success = False
        self.steps = torch.zeros(b, dtype=torch.long, device=start.device)

    def update(
        self, idx: Tensor | None, x: Tensor, loss: Tensor, success: Tensor | None, score: Tensor
    ) -> None:
        sel: Tensor | slice = slice(None) if idx is None else idx
        best_score = self.score[sel]
        better = score.to(best_score.dtype) > best_score
        if success is not None:
            self.has_success = True
            prev = self.success[sel]
            better = ~prev & (success | better)
            self.success[sel] = prev | success
        cond = better.view(-1, *([1] * (x.ndim - 1)))
        self.x[sel] = torch.where(cond, x, self.x[sel])
        self.loss[sel] = torch.where(better, loss.detach().to(self.loss.dtype), self.loss[sel])
        self.score[sel] = torch.where(better, score.to(best_score.dtype), best_score)

    def merge(self, idx: Tensor, other: _Tracker) -> None:
        """Keep, per sample of ``idx``, the worse case of this result and ``other`` (a run on
        the samples ``idx``): a success first, else the higher score; steps add up."""
        better = other.score > self.score[idx]
        if other.has_success:
            self.has_success = True
            prev = self.success[idx]
            better = ~prev & (other.success | better)
            self.success[idx] = prev | other.success
        self.x[idx] = torch.where(
            better.view(-1, *([1] * (other.x.ndim - 1))), other.x, self.x[idx]
        )
        self.loss[idx] = torch.where(better, other.loss, self.loss[idx])
        self.score[idx] = torch.where(better, other.score, self.score[idx])
        self.steps[idx] += other.steps


def _returned(adv: Tensor, clean: Tensor, norm: Norm, eps: float, dtype: torch.dtype) -> Tensor:
    """The returned images in ``dtype``, inside the ball and [0, 1] exactly.

    The iterates are computed in float32, whose rounding of ``x + δ`` can leave the ball by a
    few units in the last place; here the perturbation is projected once more in float64 and
    each value rounded toward the clean image, so ``(adv.double() - x.double())`` satisfies the
    threat model with no tolerance. Values already inside are unchanged.
    """
    if dtype == torch.float64:
        return adv
    a, c = adv.double(), clean.double()
    return _model_input((c + norm.project(a - c, eps)).clamp(0, 1), c, dtype)


def _perturbation_grad(loss: Tensor, d: Tensor, step: int) -> Tensor:
    """d(sum of the per-sample losses)/d(perturbation); an error when no gradient reaches it."""
    if not loss.requires_grad:
        raise _checks.SSLRobustRuntimeError(
            f"the attack loss does not require grad (step {step}): no gradient can reach the "
            "perturbation. The model must be differentiable with respect to its input; it "
            "must not run its forward under torch.no_grad()/inference_mode() or .detach() "
            "its output, and the loss must not go through argmax or other integer steps"
        )
    objective = loss.sum() if loss.dtype in (torch.float32, torch.float64) else loss.float().sum()
    (grad,) = torch.autograd.grad(objective, d, allow_unused=True)
    if grad is None:
        raise _checks.SSLRobustRuntimeError(
            f"the attack loss does not depend on the input images (step {step}): its graph "
            "never reaches them. Does the model use its input? Does the loss callback use the "
            "images it is given (x_active), not a copy made elsewhere?"
        )
    return torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)


_T = TypeVar("_T")


def _named_or_instance(what: str, value: object, registry: dict[str, _T], kind: type) -> _T:
    """A registered object by name (unknown names refused with the list), or a ``kind``
    instance (``kind``: the registry's abstract base class)."""
    if isinstance(value, str):
        return registry[_checks.check_choice(what, value, tuple(registry))]
    if isinstance(value, kind):
        return cast(_T, value)
    raise _checks.SSLRobustTypeError(
        f"{what} must be one of {tuple(registry)} or a {kind.__name__} instance; got "
        f"{type(value).__name__}"
    )


def pgd(
    loss_fn: LossFn | Sequence[LossFn],
    images: Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    norm: NormName | Norm = "linf",
    random_start: bool = True,
    early_stop: bool = False,
    select: Select = "best",
    generator: torch.Generator | None = None,
    schedule: ScheduleName | Schedule = "fixed",
    restarts: int = 1,
) -> AttackResult:
    r"""Projected gradient ascent on a per-sample loss: the one attack loop of the package.

    Iterates :math:`\delta_{t+1} = \Pi_{\epsilon}(\delta_t + \alpha\,\mathrm{step}(\nabla_\delta
    L(x + \delta_t)))`, clamping :math:`x + \delta` to [0, 1], for ``steps`` steps, starting from
    zero or from a uniform draw in the ball (``random_start``). ``schedule="apgd"`` replaces
    the fixed step by APGD's per-sample step-size control (:class:`APGDStep`).

    With ``restarts=K`` (or a sequence of loss callbacks, each run ``restarts`` times: APGD-T's
    target classes) the loop runs again from a fresh random start on the samples that have not
    succeeded yet (every sample, without a success criterion), and each sample keeps its worst
    case: a successful example first, else the highest score. Later runs always start
    randomly, whatever ``random_start`` says for the first one.

    Args:
        loss_fn: ``loss_fn(x_active, active_idx, step)``: runs the model on the still-active
            samples ``x_active`` (their indices into the batch are ``active_idx``) and returns
            ``(loss, success)`` or ``(loss, success, score)``: the per-sample loss to maximize
            (b,), per-sample success (b,) bool or None, and optionally the per-sample score that
            ``select="best"`` maximizes (defaults to the loss). It is called once per step with
            gradients enabled and once more without, on the final iterate. A sequence of such
            callbacks is run one after the other, each ``restarts`` times.
        images: (B, ...) clean inputs in [0, 1]. Not modified.
        eps: radius of the threat model, on the [0, 1] scale.
        step_size: step length, on the [0, 1] scale (unused by ``schedule="apgd"``, whose
            first step is 2·eps).
        steps: number of gradient steps per run (0 returns the start point).
        norm: ``"linf"``, ``"l2"`` or a :class:`Norm` instance.
        random_start: start from a uniform draw in the ball instead of the clean images.
        early_stop: stop updating a sample once it succeeded (needs a success criterion). Under
            ``select="best"`` the result is the same as without early stop, only cheaper.
        select: ``"best"`` returns per sample the first successful iterate, or the one with the
            highest score when none succeeded; ``"last"`` returns the final iterate.
        generator: source of the random starts; the global RNG is never used.
        schedule: ``"fixed"`` (the paper's PGD), ``"apgd"`` or a :class:`Schedule` instance.
        restarts: runs per loss callback (>= 1).

    Returns:
        :class:`AttackResult` whose ``loss``/``success`` describe the returned images and whose
        ``steps`` counts the gradient steps of every run.

    Example:
        >>> import torch
        >>> w = torch.randn(1, 3, 4, 4)
        >>> def loss_fn(x, idx, step):
        ...     return (x * w).flatten(1).sum(1), None
        >>> x = torch.rand(2, 3, 4, 4)
        >>> res = pgd(loss_fn, x, eps=8 / 255, step_size=2 / 255, steps=5, random_start=False)
        >>> bool(((res.adversarial - x).abs() <= 8 / 255 + 1e-6).all())
        True
        >>> res = pgd(loss_fn, x, eps=8 / 255, step_size=0, steps=5, schedule="apgd", restarts=2)
        >>> bool(((res.adversarial - x).abs() <= 8 / 255 + 1e-6).all()), res.steps.tolist()
        (True, [10, 10])
    """
    if not isinstance(images, Tensor) or not images.is_floating_point():
        raise _checks.SSLRobustTypeError(
            "images must be a floating-point tensor with values in [0, 1]; got "
            + (str(images.dtype) if isinstance(images, Tensor) else type(images).__name__)
        )
    if torch.is_inference_mode_enabled():
        raise _checks.SSLRobustRuntimeError(
            "attacks need gradients but were called under torch.inference_mode(); call them "
            "outside it (torch.no_grad() around the call is fine: attacks enable gradients "
            "for the perturbation themselves)"
        )
    _checks.check_finite_images(images)  # once per call, never per step
    norm_obj = _named_or_instance("norm", norm, NORMS, Norm)
    rule = _named_or_instance("schedule", schedule, SCHEDULES, Schedule)
    eps = _checks.check_budget("eps", eps, norm=norm_obj.name)
    step_size = _checks.check_budget("step_size", step_size, norm=norm_obj.name)
    steps = _checks.check_int("steps", steps, minimum=0)
    restarts = _checks.check_int("restarts", restarts, minimum=1)
    _checks.check_choice("select", select, ("best", "last"))
    generator = _checks.check_generator(generator)
    loss_fns = _checks.check_loss_fns(loss_fn)

    in_dtype = images.dtype
    dtype = _work_dtype(images)
    # The perturbation, the iterates and the losses live in float32 (float64 for float64
    # images); fp16/bf16 images are only the dtype the model sees and the result is returned in.
    images = images.detach().to(dtype)
    if images.is_inference():
        images = images.clone()  # inference tensors cannot enter the autograd graph
    b = images.shape[0]
    device = images.device
    if b == 0:
        return AttackResult(
            adversarial=images.to(in_dtype, copy=True),
            loss=torch.empty(0, dtype=dtype, device=device),
            success=None,
            steps=torch.zeros(0, dtype=torch.long, device=device),
        )

    def run(fn: LossFn, x0: Tensor, start: bool) -> _Tracker:
        return _run(
            fn,
            x0,
            in_dtype=in_dtype,
            eps=eps,
            step_size=step_size,
            steps=steps,
            norm=norm_obj,
            rule=rule,
            random_start=start,
            early_stop=early_stop,
            select=select,
            generator=generator,
        )

    runs = [fn for fn in loss_fns for _ in range(restarts)]
    best = run(runs[0], images, random_start)
    all_idx = torch.arange(b, device=device)
    todo = all_idx if not best.has_success else all_idx[~best.success]
    for fn in runs[1:]:
        if todo.numel() == 0:
            break
        sub = todo

        def sub_fn(x: Tensor, idx: Tensor, t: int, fn: LossFn = fn, sub: Tensor = sub) -> Any:
            return fn(x, sub[idx], t)

        res = run(sub_fn, images[sub], True)
        best.merge(sub, res)
        if res.has_success:
            todo = sub[~res.success]
    return AttackResult(
        adversarial=_returned(best.x, images, norm_obj, eps, in_dtype),
        loss=best.loss,
        success=best.success if best.has_success else None,
        steps=best.steps,
    )


def _run(
    loss_fn: LossFn,
    images: Tensor,
    *,
    in_dtype: torch.dtype,
    eps: float,
    step_size: float,
    steps: int,
    norm: Norm,
    rule: Schedule,
    random_start: bool,
    early_stop: bool,
    select: str,
    generator: torch.Generator | None,
) -> _Tracker:
    """One run of the loop on checked ``images`` (work dtype); returns its per-sample result."""
    dtype = images.dtype
    b = images.shape[0]
    device = images.device
    if random_start and eps > 0:
        delta = norm.project(norm.random_init(images, eps, generator), eps)
        delta = (images + delta).clamp(0, 1) - images
    else:
        delta = torch.zeros_like(images)

    track_best = select == "best"
    tracker = _Tracker(_model_input(images + delta, images, in_dtype).to(dtype), dtype)
    stepper = rule.start(delta, eps=eps, step_size=step_size, steps=steps, norm=norm)
    steps_run = tracker.steps
    active: Tensor | None = None  # None: every sample is active (no indexing on the hot path)
    all_idx = torch.arange(b, device=device)
    warned = False

    with _checks.input_checks(False):  # the images were checked above; no sync per step
        for t in range(steps):
            idx = all_idx if active is None else active
            x0 = images if active is None else images[active]
            # Everything from the perturbation to the loss runs with gradients enabled, so a
            # caller's torch.no_grad() cannot silently turn the attack into a no-op.
            with torch.enable_grad():
                d = (delta if active is None else delta[active]).detach().requires_grad_(True)
                x = _model_input(x0 + d, x0, in_dtype)
                loss, success, score = _unpack(loss_fn(x, idx, t), x.shape[0])
                grad = _perturbation_grad(loss, d, t)
            if early_stop and success is None and not warned:
                warned = True
                warnings.warn(
                    "early_stop=True has no effect: the loss callback returns no success "
                    "criterion (success=None), so no sample ever stops early",
                    stacklevel=3,
                )
            with torch.no_grad():
                if track_best or early_stop:
                    tracker.update(active, x.detach().to(dtype), loss, success, score)
                new = stepper.update(active, x0, d.detach(), grad, loss.detach(), t)
                if early_stop and success is not None and bool(success.any()):
                    keep = ~success
                    if active is None:
                        delta = torch.where(keep.view(-1, *([1] * (d.ndim - 1))), new, delta)
                        steps_run += keep.long()
                        active = all_idx[keep]
                    else:
                        kept = active[keep]
                        delta[kept] = new[keep]
                        steps_run[kept] += 1
                        active = kept
                    if active.numel() == 0:
                        break
                elif active is None:
                    delta = new
                    steps_run += 1
                else:
                    delta[active] = new
                    steps_run[active] += 1

        # Score the final iterate of the samples still being updated (one forward, no grad).
        final_idx = all_idx if active is None else active
        with torch.no_grad():
            if final_idx.numel() > 0:
                x0 = images if active is None else images[final_idx]
                d = delta if active is None else delta[final_idx]
                x = _model_input((x0 + d).clamp(0, 1), x0, in_dtype)
                loss, success, score = _unpack(loss_fn(x, final_idx, steps), x.shape[0])
                x = x.to(dtype)
                if track_best:
                    tracker.update(active, x, loss, success, score)
                else:
                    sel: Tensor | slice = slice(None) if active is None else final_idx
                    tracker.x[sel] = x
                    tracker.loss[sel] = loss.to(dtype)
                    tracker.score[sel] = score.to(dtype)
                    if success is not None:
                        tracker.has_success = True
                        tracker.success[sel] = success
    return tracker
