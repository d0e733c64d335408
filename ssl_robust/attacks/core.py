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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

import torch
from torch import Tensor

from .. import _checks
from .norms import L2, NORMS, Linf, Norm, SeededStart
from .schedules import SCHEDULES, APGDStep, FixedStep, Schedule, Stepper, apgd_checkpoints

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
    "check_eot_iter",
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
            samples stopped early; model queries for :class:`~ssl_robust.attacks.Square`).
        trace: (T + 1, B) the per-sample score (what ``select="best"`` maximizes: the loss
            unless the attack defines a score) at every iterate of the first run, the start
            included, NaN where a sample was not evaluated (stopped early); recorded from the
            forwards the loop runs anyway (no extra pass). None where not recorded.
        trace_success: (T + 1, B) bool, per-sample success at those iterates, or None.
        queries: (B,) int64, forward passes spent on each sample (model queries), counting
            every EOT draw and the final scoring forward; None where not counted.
    """

    adversarial: Tensor
    loss: Tensor
    success: Tensor | None
    steps: Tensor
    trace: Tensor | None = None
    trace_success: Tensor | None = None
    queries: Tensor | None = None


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
        self.queries = torch.zeros(b, dtype=torch.long, device=start.device)
        self.trace: list[Tensor] = []
        self.trace_success: list[Tensor] = []

    def record(self, idx: Tensor | None, score: Tensor, success: Tensor | None, draws: int) -> None:
        """Append one iterate's per-sample score (and success) to the trace; count queries."""
        sel: Tensor | slice = slice(None) if idx is None else idx
        row = torch.full_like(self.score, math.nan)
        row[sel] = score.detach().to(row.dtype)
        self.trace.append(row)
        if success is not None:
            hit = torch.zeros_like(self.success)
            hit[sel] = success
            self.trace_success.append(hit)
        self.queries[sel] += draws

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
        self.queries[idx] += other.queries


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
    eot_iter: int = 1,
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
        eot_iter: expectation over transformation (Athalye et al. 2018) for randomized
            models: each step calls ``loss_fn`` ``eot_iter`` times on the same iterate and
            uses the mean gradient, the mean loss and the mean score (for the step rule,
            best-iterate tracking and early stop); a sample succeeds only when it succeeds in
            every draw. ``1`` (the default) is the plain loop, unchanged. The draws come from
            the model's own randomness: :class:`~ssl_robust.attacks.Attack` seeds it from its
            ``generator``.

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
    eot_iter = check_eot_iter(eot_iter)
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
            eot_iter=eot_iter,
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
        trace=torch.stack(best.trace) if best.trace else None,
        trace_success=torch.stack(best.trace_success) if best.trace_success else None,
        queries=best.queries,
    )


def check_eot_iter(eot_iter: object) -> int:
    """Check the number of EOT draws per step (an int >= 1)."""
    if isinstance(eot_iter, bool) or not isinstance(eot_iter, int) or eot_iter < 1:
        raise _checks.SSLRobustValueError(
            "eot_iter must be an int >= 1 (the forward passes averaged per step; 1 for "
            f"deterministic models); got {eot_iter!r}"
        )
    return eot_iter


def _eot(
    loss_fn: LossFn,
    x0: Tensor,
    d0: Tensor,
    idx: Tensor,
    t: int,
    *,
    in_dtype: torch.dtype,
    draws: int,
    grad: bool,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor, Tensor | None]:
    """``draws`` forwards at ``x0 + d0`` (clamped to [0, 1] without ``grad``); returns (x,
    mean loss, success in every draw, mean score, mean gradient or None). One backward per
    draw: the memory of one graph."""
    b = x0.shape[0]
    loss_sum: Tensor | None = None
    score_sum: Tensor | None = None
    grad_sum: Tensor | None = None
    every: Tensor | None = None
    x = x0
    for _ in range(draws):
        d = d0.detach().requires_grad_(grad)
        x = _model_input(x0 + d if grad else (x0 + d).clamp(0, 1), x0, in_dtype)
        loss, success, score = _unpack(loss_fn(x, idx, t), b)
        if grad:
            g = _perturbation_grad(loss, d, t)
            grad_sum = g if grad_sum is None else grad_sum + g
        loss = loss.detach()
        loss_sum = loss if loss_sum is None else loss_sum + loss
        score_sum = score if score_sum is None else score_sum + score
        if success is not None:
            every = success if every is None else every & success
    assert loss_sum is not None and score_sum is not None
    mean_grad = None if grad_sum is None else grad_sum / draws
    return x.detach(), loss_sum / draws, every, score_sum / draws, mean_grad


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
    eot_iter: int = 1,
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
                if eot_iter == 1:
                    x = _model_input(x0 + d, x0, in_dtype)
                    loss, success, score = _unpack(loss_fn(x, idx, t), x.shape[0])
                    grad = _perturbation_grad(loss, d, t)
                else:
                    x, loss, success, score, mean_grad = _eot(
                        loss_fn, x0, d, idx, t, in_dtype=in_dtype, draws=eot_iter, grad=True
                    )
                    assert mean_grad is not None
                    grad = mean_grad
            if early_stop and success is None and not warned:
                warned = True
                warnings.warn(
                    "early_stop=True has no effect: the loss callback returns no success "
                    "criterion (success=None), so no sample ever stops early",
                    stacklevel=3,
                )
            with torch.no_grad():
                tracker.record(active, score, success, eot_iter)
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
                if eot_iter == 1:
                    x = _model_input((x0 + d).clamp(0, 1), x0, in_dtype)
                    loss, success, score = _unpack(loss_fn(x, final_idx, steps), x.shape[0])
                else:
                    x, loss, success, score, _ = _eot(
                        loss_fn, x0, d, final_idx, steps,
                        in_dtype=in_dtype, draws=eot_iter, grad=False,
                    )  # fmt: skip
                tracker.record(active, score, success, eot_iter)
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
