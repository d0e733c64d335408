"""Square: the score-based black-box attack of Andriushchenko et al. (ECCV 2020), L∞ and L2.

Square needs no gradient: it proposes a random change of a square window of the current best
perturbation (vertices of the L∞ ball; pairs of windows moving L2 mass) and keeps it when the
per-sample loss improves. It is the check that a defense does not merely mask gradients: a
model robust to PGD but broken by Square was never robust (AutoAttack runs it for this reason).

:func:`square` is the functional loop on a per-sample loss callback (the same callback
signature as :func:`~ssl_robust.attacks.core.pgd`); :class:`Square` is the attack on our
contract. AutoAttack's settings are the defaults: ``p_init=0.8``, 5000 queries, its schedule of
the window size (the share of pixels changed halves at fixed fractions of the budget), and the
logit margin as the loss for classification. For segmentation, depth and embeddings it
maximizes the per-sample loss of a task attack (``objective=``) and stops on its success.

Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box
adversarial attack via random search", ECCV 2020.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .. import _checks
from ..losses.classification import _logit_margin
from .base import Attack
from .classification import _check_logits
from .core import (
    AttackResult,
    LossFn,
    _model_input,
    _returned,
    _unpack,
    _work_dtype,
    check_eot_iter,
)
from .norms import NORMS, Norm, SeededStart

__all__ = ["Square", "p_schedule", "square"]

#: Fractions of the query budget (in 1/10000) after which AutoAttack halves p.
_P_BOUNDS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_schedule(p_init: float, query: int, queries: int) -> float:
    """The share of pixels Square changes at ``query`` of ``queries`` (AutoAttack's schedule).

    ``p_init`` until 0.1% of the budget, then halved at 0.5%, 2%, 5%, 10%, 20%, 40%, 60% and
    80% of it (down to ``p_init / 512``).

    Example:
        >>> p_schedule(0.8, 0, 5000), p_schedule(0.8, 100, 5000), p_schedule(0.8, 4999, 5000)
        (0.8, 0.2, 0.0015625)
    """
    it = int(query / max(queries, 1) * 10000)
    halvings = sum(it > bound for bound in _P_BOUNDS)
    return float(p_init / 2**halvings)


def _signs(shape: tuple[int, ...], gen: torch.Generator, like: Tensor) -> Tensor:
    draw = torch.randint(0, 2, shape, generator=gen, device=gen.device)
    return (draw * 2 - 1).to(device=like.device, dtype=like.dtype)


def _randint(high: int, gen: torch.Generator) -> int:
    """A uniform int in [0, high] (inclusive)."""
    return int(torch.randint(0, high + 1, (1,), generator=gen, device=gen.device).item())


def _eta(n: int, m: int) -> Tensor:
    """Nested rectangles of weight 1/(k+1)² around the centre of an n×m block, unit L2 norm."""
    d = torch.zeros(n, m, dtype=torch.float64)
    r, c = n // 2, m // 2
    for k in range(max(n // 2 + 1, m // 2 + 1)):
        d[max(r - k, 0) : min(r - k + 2 * k + 1, n), max(c - k, 0) : min(c - k + 2 * k + 1, m)] += (
            1.0 / (k + 1) ** 2
        )
    out: Tensor = d / d.norm()
    return out


def _pseudo_gaussian(s: int, gen: torch.Generator) -> Tensor:
    """An s×s block: +eta on the top half, −eta on the bottom, unit norm, randomly transposed."""
    d = torch.zeros(s, s, dtype=torch.float64)
    half = s // 2
    if half > 0:
        d[:half] = _eta(half, s)
    d[half:] = -_eta(s - half, s)
    d = d / d.norm()
    flip = torch.rand(1, generator=gen, device=gen.device).item() > 0.5
    out: Tensor = d.t().contiguous() if flip else d
    return out


def _l2(t: Tensor) -> Tensor:
    out: Tensor = t.flatten(1).norm(dim=1).view(-1, *([1] * (t.ndim - 1)))
    return out


def _budget_limit(norm: str, images: Tensor) -> float:
    """The largest meaningful budget: 1 for L∞, the diagonal of the image cube for L2."""
    return 1.0 if norm == "linf" else math.sqrt(images[0].numel())


class _Search:
    """One random search on a batch ``x`` (work dtype) with one loss callback."""

    def __init__(
        self,
        fn: LossFn,
        x: Tensor,
        rows: Tensor,
        *,
        in_dtype: torch.dtype,
        eps: float,
        norm: str,
        eot_iter: int,
        gen: torch.Generator,
    ) -> None:
        self.fn, self.x, self.rows = fn, x, rows
        self.in_dtype, self.eps, self.norm, self.eot, self.gen = in_dtype, eps, norm, eot_iter, gen
        b = x.shape[0]
        self.queries = torch.zeros(b, dtype=torch.long, device=x.device)

    def evaluate(
        self, x_new: Tensor, idx: Tensor, q: int
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """Mean loss and score over the EOT draws at ``x_new`` (the samples ``idx``); returns
        (x as the model saw it, loss, score, success in every draw or None)."""
        x0 = self.x[idx]
        x_in = _model_input(x_new, x0, self.in_dtype)
        total: Tensor | None = None
        total_score: Tensor | None = None
        every: Tensor | None = None
        for _ in range(self.eot):
            loss, success, score = _unpack(self.fn(x_in, self.rows[idx], q), x_in.shape[0])
            loss, score = loss.detach().to(self.x.dtype), score.to(self.x.dtype)
            total = loss if total is None else total + loss
            total_score = score if total_score is None else total_score + score
            if success is not None:
                every = success if every is None else every & success
        self.queries[idx] += self.eot
        assert total is not None and total_score is not None
        return x_in.detach().to(self.x.dtype), total / self.eot, total_score / self.eot, every

    def start(self) -> Tensor:
        x, eps = self.x, self.eps
        b, c, h, w = x.shape
        if self.norm == "linf":  # vertical stripes of ±eps
            return (x + eps * _signs((b, c, 1, w), self.gen, x)).clamp(0, 1)
        s = max(min(h, w) // 5, 1)
        delta = torch.zeros_like(x)
        top, left = (h - 5 * s) // 2 if h >= 5 * s else 0, (w - 5 * s) // 2 if w >= 5 * s else 0
        for vh in range(top, h - s + 1, s):
            for vw in range(left, w - s + 1, s):
                block = _pseudo_gaussian(s, self.gen).to(x)
                delta[:, :, vh : vh + s, vw : vw + s] += block * _signs((b, c, 1, 1), self.gen, x)
        return (x + eps * delta / _l2(delta).clamp_min(1e-12)).clamp(0, 1)

    def propose(self, best: Tensor, idx: Tensor, p: float) -> Tensor:
        """New candidates for the samples ``idx`` from their current best ``best``."""
        x0 = self.x[idx]
        b, c, h, w = x0.shape
        n_features = c * h * w
        eps = self.eps
        side = math.sqrt(p * n_features / c)
        if self.norm == "linf":
            s = min(max(round(side), 1), max(min(h, w) - 1, 1))
            vh, vw = _randint(h - s, self.gen), _randint(w - s, self.gen)
            new = best.clone()
            win = (slice(None), slice(None), slice(vh, vh + s), slice(vw, vw + s))
            new[win] = (x0[win] + eps * _signs((b, c, 1, 1), self.gen, x0)).clamp(0, 1)
            return new
        s = max(round(side), 3)
        s = s + 1 if s % 2 == 0 else s
        s = min(s, min(h, w))
        delta = best - x0
        vh, vw = _randint(h - s, self.gen), _randint(w - s, self.gen)
        vh2, vw2 = _randint(h - s, self.gen), _randint(w - s, self.gen)
        w1 = (slice(None), slice(None), slice(vh, vh + s), slice(vw, vw + s))
        w2 = (slice(None), slice(None), slice(vh2, vh2 + s), slice(vw2, vw2 + s))
        mask = torch.zeros_like(x0)
        mask[w1] = 1
        mask[w2] = 1
        norm_image = _l2(delta)
        norm_windows = _l2(delta * mask)
        old = delta[w1]
        old_norm = old.pow(2).sum(dim=(-2, -1), keepdim=True).sqrt()
        block = _pseudo_gaussian(s, self.gen).to(x0).view(1, 1, s, s)
        moved = block * _signs((b, c, 1, 1), self.gen, x0) + old / (old_norm + 1e-12)
        room = ((eps**2 - norm_image.pow(2)).clamp_min(0) / c + norm_windows.pow(2)).sqrt()
        moved = moved / moved.pow(2).sum(dim=(-2, -1), keepdim=True).sqrt().clamp_min(1e-12)
        delta = delta.clone()
        delta[w2] = 0
        delta[w1] = moved * room
        return (x0 + eps * delta / _l2(delta).clamp_min(1e-12)).clamp(0, 1)

    def run(
        self, queries: int, p_init: float, early_stop: bool
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """The search; returns (best point, its loss, its success or None) per sample."""
        b = self.x.shape[0]
        all_idx = torch.arange(b, device=self.x.device)
        best, loss, score, success = self.evaluate(self.start(), all_idx, 0)
        done = torch.zeros(b, dtype=torch.bool, device=self.x.device)
        if success is not None:
            done = success.clone()
        has_success = success is not None
        for q in range(1, queries):
            idx = all_idx[~done] if (early_stop and has_success) else all_idx
            if idx.numel() == 0:
                break
            cand = self.propose(best[idx], idx, p_schedule(p_init, q - 1, queries))
            cand, new_loss, new_score, new_success = self.evaluate(cand, idx, q)
            # the score first (what the task damage tracks), the loss on ties
            old_score = score[idx]
            better = (new_score > old_score) | ((new_score == old_score) & (new_loss > loss[idx]))
            if new_success is not None:
                prev = done[idx]
                better = (new_success & ~prev) | ((new_success == prev) & better)
                done[idx] = torch.where(better, new_success, prev)
            best[idx] = torch.where(better.view(-1, 1, 1, 1), cand, best[idx])
            loss[idx] = torch.where(better, new_loss, loss[idx])
            score[idx] = torch.where(better, new_score, old_score)
        return best, loss, (done if has_success else None)


def square(
    loss_fn: LossFn | Sequence[LossFn],
    images: Tensor,
    *,
    eps: float,
    norm: Literal["linf", "l2"] | Norm = "linf",
    queries: int = 5000,
    p_init: float = 0.8,
    early_stop: bool = True,
    generator: torch.Generator | None = None,
    eot_iter: int = 1,
) -> AttackResult:
    """Square's random search on a per-sample loss (maximized), batched.

    Per query, each still-active sample gets one candidate: L∞ sets a random square window of
    the perturbation to a random vertex (±eps per channel); L2 moves the perturbation's mass
    from one random window to another with a pseudo-Gaussian bump, renormalized to eps. A
    candidate is kept when it succeeds where the best did not, else when its score is higher
    (the loss when the callback returns no score), else on an equal score when its loss is
    higher. The
    window covers ``p_schedule(p_init, query, queries)`` of the pixels (window positions are
    shared by the batch, the signs are per sample, as in AutoAttack).

    Args:
        loss_fn: ``loss_fn(x_active, active_idx, query) -> (loss, success[, score])`` as in
            :func:`~ssl_robust.attacks.core.pgd` (called without gradients); a sequence is run
            one after the other on the samples not yet successful.
        images: (B, C, H, W) clean images in [0, 1]. Not modified.
        eps: radius of the threat model: (0, 1] for L∞, (0, sqrt(C·H·W)] for L2.
        norm: ``"linf"`` or ``"l2"`` (or such a :class:`~ssl_robust.attacks.Norm`).
        queries: model queries per sample (>= 1), the start included.
        p_init: initial share of the pixels changed, in (0, 1].
        early_stop: stop querying samples that succeeded (with a success criterion).
        generator: source of every random choice; the global RNG is never used.
        eot_iter: forwards averaged per candidate (randomized models).

    Returns:
        :class:`AttackResult`: the best point per sample, its loss and success; ``steps`` and
        ``queries`` both count the forward passes spent per sample.

    Example:
        >>> import torch
        >>> w = torch.randn(1, 3, 8, 8)
        >>> fn = lambda x, idx, q: ((x * w).flatten(1).sum(1), None)
        >>> x = torch.rand(2, 3, 8, 8)
        >>> res = square(fn, x, eps=8 / 255, queries=50, generator=torch.Generator().manual_seed(0))
        >>> bool((res.adversarial - x).abs().max() <= 8 / 255), res.queries.tolist()
        (True, [50, 50])
    """
    if not isinstance(images, Tensor) or not images.is_floating_point() or images.ndim != 4:
        raise _checks.SSLRobustTypeError(
            "Square needs images as a floating-point (B, C, H, W) tensor in [0, 1]; got "
            + (f"{images.dtype} {tuple(images.shape)}" if isinstance(images, Tensor) else
               type(images).__name__)
        )  # fmt: skip
    _checks.check_finite_images(images)
    norm_name = (
        norm.name if isinstance(norm, Norm) else _checks.check_choice("norm", norm, ("linf", "l2"))
    )
    if norm_name not in NORMS:
        raise _checks.SSLRobustValueError(f"Square supports norm 'linf' or 'l2'; got {norm_name!r}")
    eps = check_square_budget(eps, norm_name, images)
    queries = _checks.check_int("queries", queries, minimum=1)
    p_init = check_p_init(p_init)
    eot_iter = check_eot_iter(eot_iter)
    generator = _checks.check_generator(generator)
    loss_fns = _checks.check_loss_fns(loss_fn)
    h, w = images.shape[-2:]
    if norm_name == "l2" and min(h, w) < 3:
        raise _checks.SSLRobustValueError(
            f"Square(norm='l2') needs images of at least 3×3 pixels; got {h}×{w}"
        )
    in_dtype, dtype = images.dtype, _work_dtype(images)
    x = images.detach().to(dtype)
    b, device = x.shape[0], x.device
    gen = generator
    if gen is None:
        gen = torch.Generator(device=device)
        gen.seed()
    best = x.clone()
    loss = torch.full((b,), -math.inf, dtype=dtype, device=device)
    success = torch.zeros(b, dtype=torch.bool, device=device)
    spent = torch.zeros(b, dtype=torch.long, device=device)
    has_success = False
    todo = torch.arange(b, device=device)
    with torch.no_grad():
        for fn in loss_fns:
            if todo.numel() == 0:
                break
            search = _Search(
                fn, x[todo], todo, in_dtype=in_dtype, eps=eps, norm=norm_name,
                eot_iter=eot_iter, gen=gen,
            )  # fmt: skip
            s_best, s_loss, s_success = search.run(queries, p_init, early_stop)
            spent[todo] += search.queries
            better = s_loss > loss[todo]
            if s_success is not None:
                prev = success[todo]
                better = (s_success & ~prev) | ((s_success == prev) & better)
                success[todo] = prev | s_success
                has_success = True
            best[todo] = torch.where(better.view(-1, 1, 1, 1), s_best, best[todo])
            loss[todo] = torch.where(better, s_loss, loss[todo])
            if has_success:
                todo = todo[~success[todo]]
    adversarial = _returned(best, x, NORMS[norm_name], eps, in_dtype)
    if in_dtype == torch.float64:
        adversarial = _inside(adversarial, x, norm_name, eps)
    return AttackResult(
        adversarial=adversarial,
        loss=loss,
        success=success if has_success else None,
        steps=spent.clone(),
        queries=spent,
    )


def _inside(adv: Tensor, x: Tensor, norm: str, eps: float) -> Tensor:
    """float64 points whose rounding left the ball by an ulp, moved back toward ``x``."""
    for _ in range(4):
        d = adv - x
        if norm == "linf":
            out = d.abs() > eps
            if not bool(out.any()):
                break
            adv = torch.where(out, torch.nextafter(adv, x), adv)
        else:
            size = _l2(d)
            out = size > eps
            if not bool(out.any()):
                break
            adv = torch.where(out, x + d * (eps / size) * (1 - 1e-12), adv).clamp(0, 1)
    return adv


def check_square_budget(eps: object, norm: str, images: Tensor) -> float:
    """eps for Square: > 0 and at most 1 (L∞) or the image cube's diagonal sqrt(C·H·W) (L2)."""
    value = _checks.check_budget("eps", eps, norm=norm, allow_zero=False)
    limit = _budget_limit(norm, images)
    if value > limit:
        raise _checks.SSLRobustValueError(
            f"Square(norm={norm!r}) eps must be in (0, {limit:.4g}] for images of shape "
            f"{tuple(images.shape[1:])} (the diameter of the image cube); got {value:.6g}"
        )
    return value


def check_p_init(p_init: object) -> float:
    """p_init, the initial share of pixels Square changes, in (0, 1]."""
    value = _checks.check_positive_float("p_init", p_init)
    if not 0 < value <= 1:
        raise _checks.SSLRobustValueError(f"p_init must be in (0, 1]; got {value:.6g}")
    return value


def _seeded(norm: Norm, generator: torch.Generator | None) -> torch.Generator | None:
    """Under :func:`~ssl_robust.evaluation.seeded_starts`: one generator from the batch's
    per-sample seeds (deterministic; depends on the batch's composition)."""
    if not isinstance(norm, SeededStart):
        return generator
    key = ",".join(str(s) for s in norm.seeds).encode()
    seed = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1
    return torch.Generator().manual_seed(seed)


class Square(Attack):
    r"""The Square attack (score-based, no gradients) on our attack contract.

    Images stay in [0, 1] and exactly inside the eps-ball; the model runs in eval mode with
    its state restored afterwards (as every :class:`~ssl_robust.attacks.Attack`); every random
    choice comes from ``generator``. Each sample spends at most ``queries`` forward passes and
    stops at its first success (``early_stop``); ``AttackResult.queries`` (and ``steps``)
    count them per sample.

    Objective: for classification (``objective=None``) the logit margin
    :math:`\max_{i\ne y} z_i - z_y` (AutoAttack's margin loss), success = misclassified. For
    other tasks pass a task attack on the same model as ``objective``: Square maximizes its
    per-sample :meth:`~ssl_robust.attacks.Attack.score` (SegPGD: the share of wrong pixels),
    with its :meth:`~ssl_robust.attacks.Attack.loss` (step 0) breaking ties (the loss alone
    where the attack has no score), stops on its
    :meth:`~ssl_robust.attacks.Attack.success`, takes its target and its per-sample
    :meth:`~ssl_robust.attacks.Attack.damage` (so it joins an
    :class:`~ssl_robust.attacks.Ensemble` of that task), e.g. ``SegPGD(model, loss="ce")``,
    ``DepthPGD(model)``, ``EmbedAttack(encoder)``.

    Args:
        model: the network under attack (only its outputs are used).
        eps: radius on the [0, 1] scale: (0, 1] for L∞, (0, sqrt(C·H·W)] for L2.
        norm: ``"linf"`` or ``"l2"``.
        queries: forward passes per sample (AutoAttack: 5000).
        p_init: initial share of the pixels changed per query (AutoAttack: 0.8); halved on
            AutoAttack's schedule (:func:`p_schedule`).
        generator: random source; the global RNG is never used.
        objective: the task attack whose per-sample loss Square maximizes (None: the margin
            of a classifier).
        early_stop: stop querying a sample once it succeeded.
        eval_mode: run the model in eval mode (restored after).
        eot_iter: forwards averaged per candidate (randomized models).

    Raises:
        SSLRobustValueError: eps outside its norm's range, p_init outside (0, 1], queries < 1,
            eot_iter < 1, an objective on another model.
        SSLRobustTypeError: an objective that is not an Attack or has no per-sample loss.

    Example:
        >>> import torch
        >>> from ssl_robust.attacks import Square
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
        >>> images, labels = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
        >>> res = Square(model, queries=100, generator=torch.Generator().manual_seed(0)).run(
        ...     images, labels)
        >>> bool((res.adversarial - images).abs().max() <= 8 / 255), bool(res.queries.max() <= 100)
        (True, True)
    """

    def __init__(
        self,
        model: nn.Module | Callable[[Tensor], Any],
        *,
        eps: float = 8 / 255,
        norm: Literal["linf", "l2"] = "linf",
        queries: int = 5000,
        p_init: float = 0.8,
        generator: torch.Generator | None = None,
        objective: Attack | None = None,
        early_stop: bool = True,
        eval_mode: bool = True,
        eot_iter: int = 1,
    ) -> None:
        super().__init__(
            model, eps=eps, step_size=0.0, steps=0, norm=norm, generator=generator,
            eval_mode=eval_mode, eot_iter=eot_iter,
        )  # fmt: skip
        if self.eps <= 0:
            raise _checks.SSLRobustValueError("Square needs eps > 0; got 0")
        self.queries = _checks.check_int("queries", queries, minimum=1)
        self.p_init = check_p_init(p_init)
        self.early_stop = bool(early_stop)
        if objective is not None:
            if not isinstance(objective, Attack) or isinstance(objective, Square):
                raise _checks.SSLRobustTypeError(
                    "Square(objective=...) takes a task attack (SegPGD, DepthPGD, EmbedAttack, "
                    f"PGD, APGD, ...) whose per-sample loss it maximizes; got "
                    f"{type(objective).__name__}"
                )
            if type(objective).loss is Attack.loss and type(objective).evaluate is Attack.evaluate:
                raise _checks.SSLRobustTypeError(
                    f"{type(objective).__name__} defines no per-sample loss, so Square has "
                    "nothing to maximize; give an attack with loss(output, target, step) -> (B,)"
                )
            if objective.model is not model:
                raise _checks.SSLRobustValueError(
                    "Square(objective=...) must be built on the same model object as Square"
                )
        self.objective = objective
        # Ensemble reads the task per member: the objective's, or classification.
        self.__dict__["task"] = objective.task if objective is not None else "classification"

    # ----------------------------------------------------------------- task hooks
    def prepare_target(self, images: Tensor, target: Any) -> Any:
        if self.objective is not None:
            return self.objective.prepare_target(images, target)
        if target is None:
            raise _checks.SSLRobustTypeError(
                "Square needs labels for classification: call attack(images, labels) with "
                f"labels of shape ({images.shape[0]},), or pass objective= for other tasks"
            )
        return _checks.check_labels(target, batch=images.shape[0], device=images.device)

    def check_output(self, output: Any, target: Any) -> None:
        if self.objective is not None:
            self.objective.check_output(output, target)
            return
        _check_logits("Square", output)
        _checks.check_label_range(target, output.shape[1])

    def evaluate(
        self, output: Any, target: Any, step: int
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        if self.objective is not None:
            return self.objective.evaluate(output, target, 0)
        margin = _logit_margin(output, target)
        return margin, output.argmax(1) != target, None

    def loss(self, output: Any, target: Any, step: int) -> Tensor:
        return self.evaluate(output, target, step)[0]

    def success(self, output: Any, target: Any) -> Tensor | None:
        return self.evaluate(output, target, 0)[1]

    def damage(self, output: Any, target: Any) -> tuple[Tensor, Tensor]:
        if self.objective is not None:
            return self.objective.damage(output, target)
        return _logit_margin(output, target), output.argmax(1) != target

    def restart_targets(self, target: Any) -> list[Any]:
        if self.objective is not None:
            return self.objective.restart_targets(target)
        return [target]

    def _optimize(self, loss_fns: list[LossFn], images: Tensor) -> AttackResult:
        norm = self.norm
        return square(
            loss_fns,
            images,
            eps=self.eps,
            norm=norm if isinstance(norm, Norm) else self.norm,  # type: ignore[arg-type]
            queries=self.queries,
            p_init=self.p_init,
            early_stop=self.early_stop,
            generator=_seeded(norm, self.generator) if isinstance(norm, Norm) else self.generator,
            eot_iter=self.eot_iter,
        )

    def extra_repr(self) -> str:
        return (
            f"eps={self.eps:.4g}, norm={self.norm!r}, queries={self.queries}, "
            f"p_init={self.p_init:.4g}, early_stop={self.early_stop}"
            + (f", eot_iter={self.eot_iter}" if self.eot_iter != 1 else "")
            + (f", objective={type(self.objective).__name__}" if self.objective else "")
        )
