"""The shared projected-gradient core: the one PGD loop of ssl_robust.

Every attack of the library (:class:`~ssl_robust.attacks.PGD`, ``SegPGD``, ``DepthPGD``,
:class:`~ssl_robust.attacks.EmbedAttack`) is this loop with a different loss. The loop owns the
random start, the gradient (``torch.autograd.grad`` with respect to the perturbation only), the
step, the projection onto the threat model, the clamp to the image range, the per-sample
best-iterate tracking and the per-sample early stop. Threat models are small :class:`Norm`
objects with three hooks (``random_init``, ``step``, ``project``), as in foolbox.

Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018.
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from .. import _checks

__all__ = ["L2", "NORMS", "AttackResult", "Linf", "LossFn", "Norm", "pgd"]

NormName = Literal["linf", "l2"]
Select = Literal["best", "last"]

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
    def step(self, delta: Tensor, grad: Tensor, step_size: float) -> Tensor:
        """Move ``delta`` by ``step_size`` in the steepest-ascent direction of ``grad``."""

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

    def step(self, delta: Tensor, grad: Tensor, step_size: float) -> Tensor:
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

    def step(self, delta: Tensor, grad: Tensor, step_size: float) -> Tensor:
        return delta + step_size * grad / _per_sample_norm(grad).clamp_min(1e-12)

    def project(self, delta: Tensor, eps: float) -> Tensor:
        factor = (eps / _per_sample_norm(delta).clamp_min(1e-12)).clamp(max=1.0)
        return delta * factor


#: The registered threat models, by the name attacks accept in ``norm=``.
NORMS: dict[str, Norm] = {"linf": Linf(), "l2": L2()}


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


def pgd(
    loss_fn: LossFn,
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
) -> AttackResult:
    r"""Projected gradient ascent on a per-sample loss: the one attack loop of the package.

    Iterates :math:`\delta_{t+1} = \Pi_{\epsilon}(\delta_t + \alpha\,\mathrm{step}(\nabla_\delta
    L(x + \delta_t)))`, clamping :math:`x + \delta` to [0, 1], for ``steps`` steps, starting from
    zero or from a uniform draw in the ball (``random_start``).

    Args:
        loss_fn: ``loss_fn(x_active, active_idx, step)``: runs the model on the still-active
            samples ``x_active`` (their indices into the batch are ``active_idx``) and returns
            ``(loss, success)`` or ``(loss, success, score)``: the per-sample loss to maximize
            (b,), per-sample success (b,) bool or None, and optionally the per-sample score that
            ``select="best"`` maximizes (defaults to the loss). It is called once per step with
            gradients enabled and once more without, on the final iterate.
        images: (B, ...) clean inputs in [0, 1]. Not modified.
        eps: radius of the threat model, on the [0, 1] scale.
        step_size: step length, on the [0, 1] scale.
        steps: number of gradient steps (0 returns the start point).
        norm: ``"linf"``, ``"l2"`` or a :class:`Norm` instance.
        random_start: start from a uniform draw in the ball instead of the clean images.
        early_stop: stop updating a sample once it succeeded (needs a success criterion). Under
            ``select="best"`` the result is the same as without early stop, only cheaper.
        select: ``"best"`` returns per sample the first successful iterate, or the one with the
            highest score when none succeeded; ``"last"`` returns the final iterate.
        generator: source of the random start; the global RNG is never used.

    Returns:
        :class:`AttackResult` whose ``loss``/``success`` describe the returned images.

    Example:
        >>> import torch
        >>> w = torch.randn(1, 3, 4, 4)
        >>> def loss_fn(x, idx, step):
        ...     return (x * w).flatten(1).sum(1), None
        >>> x = torch.rand(2, 3, 4, 4)
        >>> res = pgd(loss_fn, x, eps=8 / 255, step_size=2 / 255, steps=5, random_start=False)
        >>> bool(((res.adversarial - x).abs() <= 8 / 255 + 1e-6).all())
        True
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
    if isinstance(norm, str):
        norm_obj = NORMS[_checks.check_choice("norm", norm, tuple(NORMS))]
    elif isinstance(norm, Norm):
        norm_obj = norm
    else:
        raise _checks.SSLRobustTypeError(
            f"norm must be one of {tuple(NORMS)} or a Norm instance; got {type(norm).__name__}"
        )
    eps = _checks.check_budget("eps", eps, norm=norm_obj.name)
    step_size = _checks.check_budget("step_size", step_size, norm=norm_obj.name)
    steps = _checks.check_int("steps", steps, minimum=0)
    _checks.check_choice("select", select, ("best", "last"))
    generator = _checks.check_generator(generator)

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

    if random_start and eps > 0:
        delta = norm_obj.project(norm_obj.random_init(images, eps, generator), eps)
        delta = (images + delta).clamp(0, 1) - images
    else:
        delta = torch.zeros_like(images)

    track_best = select == "best"
    tracker = _Tracker(_model_input(images + delta, images, in_dtype).to(dtype), dtype)
    steps_run = torch.zeros(b, dtype=torch.long, device=device)
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
                    stacklevel=2,
                )
            with torch.no_grad():
                if track_best or early_stop:
                    tracker.update(active, x.detach().to(dtype), loss, success, score)
                new = norm_obj.project(norm_obj.step(d.detach(), grad, step_size), eps)
                new = (x0 + new).clamp(0, 1) - x0
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
                    if success is not None:
                        tracker.has_success = True
                        tracker.success[sel] = success
    return AttackResult(
        adversarial=_returned(tracker.x, images, norm_obj, eps, in_dtype),
        loss=tracker.loss,
        success=tracker.success if tracker.has_success else None,
        steps=steps_run,
    )
