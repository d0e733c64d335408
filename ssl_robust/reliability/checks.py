"""Is my evaluation reliable? Attack-failure indicators for every task: :func:`check_evaluation`.

A defense that masks gradients (zero or shattered gradients, randomness, probability outputs,
non-differentiable preprocessing) reads as robust to every gradient attack. The checks here
run the attack that was used, and variants of it, on a small subset and flag the symptoms,
each with what to do about it (Pintor et al., "Indicators of Attack Failure", NeurIPS 2022;
AutoAttack's flags, Croce & Hein 2020; Carlini et al., "On Evaluating Adversarial
Robustness", 2019).

Every comparison is made on one scale per task, the *normalized damage* of a sample:
0 at the mean clean value of the task's per-sample metric (:attr:`~ssl_robust.tasks.TaskSpec.
sample_metric`: correct 1/0, pixel accuracy, RMSE; the embedding distance for EmbedAttack)
and 1 at (or beyond) the *degenerate floor*, the value the model reaches when it is shown
another image of the subset (chance accuracy, near-chance pixel accuracy, the RMSE of an
unrelated depth map, the distance between the embeddings of two images). Thresholds are
fractions in [0, 1].
"""

from __future__ import annotations

import copy
import itertools
import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .. import _checks
from ..attacks import NORMS, Attack, EmbedAttack, Ensemble, Square, embedding_distance
from ..attacks.base import model_output, preserved_state
from ..data.base import DatasetInfo
from ..data.batches import unpack_batch
from ..encoders import EncoderOutput
from ..evaluation import head_of
from ..tasks import TaskSpec, get_task
from .report import DEFAULT_THRESHOLDS, INDICATORS, CheckRow, EvaluationReport, Status

__all__ = ["check_evaluation"]


# ----------------------------------------------------------------------------- judges
class _Judge:
    """The per-sample metric of a task, on the model's predictions."""

    metric: str
    higher_is_better: bool

    def quality(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def floor(self, x: Tensor) -> Tensor:
        raise NotImplementedError


class _TaskJudge(_Judge):
    def __init__(self, spec: TaskSpec, model: Any, target: Tensor, info: DatasetInfo) -> None:
        self.spec, self.model, self.target, self.info = spec, model, target, info
        self.metric = f"{spec.name} sample_metric"
        self.higher_is_better = spec.higher_is_better

    def _score(self, x: Tensor, target: Tensor) -> Tensor:
        with torch.no_grad():
            pred = model_output(self.model(x))
        return self.spec.sample_metric(pred, target, self.info).double()

    def quality(self, x: Tensor) -> Tensor:
        return self._score(x, self.target)

    def floor(self, x: Tensor) -> Tensor:
        return self._score(x.roll(1, 0), self.target)


class _EmbedJudge(_Judge):
    def __init__(self, attack: EmbedAttack, model: Any, clean: Tensor) -> None:
        self.attack, self.model = attack, model
        self.metric = f"embedding distance ({attack.distance}, {attack.tokens})"
        self.higher_is_better = False
        with torch.no_grad():
            self.ref = attack.embed(model_output(model(clean))).detach()

    def quality(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            emb = self.attack.embed(model_output(self.model(x)))
        return embedding_distance(emb, self.ref, self.attack.distance).double()  # type: ignore[arg-type]

    def floor(self, x: Tensor) -> Tensor:
        return embedding_distance(self.ref.roll(1, 0), self.ref, self.attack.distance).double()  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- helpers
def _members(attack: Attack | Ensemble) -> list[Attack]:
    return list(attack.attacks) if isinstance(attack, Ensemble) else [attack]


def _variant(
    attack: Attack | Ensemble,
    seed: int,
    *,
    eps: float | None = None,
    factor: int = 1,
    extra_restarts: int = 0,
    model: Any = None,
) -> Attack | Ensemble:
    """A copy of ``attack`` with another budget, more steps/restarts or another model."""
    if isinstance(attack, Ensemble):
        return Ensemble(
            [_variant(a, seed + i, eps=eps, factor=factor, extra_restarts=extra_restarts,
                      model=model) for i, a in enumerate(attack.attacks)]  # type: ignore[misc]
        )  # fmt: skip
    new = copy.copy(attack)
    new.generator = torch.Generator().manual_seed(seed)
    if model is not None:
        new.model = model
        if isinstance(new, Square) and new.objective is not None:
            new.objective = _variant(new.objective, seed, model=model)  # type: ignore[assignment]
    if eps is not None:
        if attack.eps > 0 and attack.schedule == "fixed":
            new.step_size = attack.step_size * eps / attack.eps
        new.eps = eps
    if factor != 1:
        if isinstance(new, Square) and isinstance(attack, Square):
            new.queries = attack.queries * factor
        else:
            new.steps = attack.steps * factor
    new.restarts = attack.restarts + extra_restarts
    return new


def _unbounded(attack: Attack, x: Tensor) -> float:
    return 1.0 if attack.norm == "linf" else math.sqrt(x[0].numel())


def _input_grads(member: Attack, x: Tensor, target: Any, seed: int) -> Tensor:
    """(B,) True where the input gradient of the attack loss at its start point is zero or
    non-finite."""
    model = _checks.unwrap_distributed(member.model)
    with preserved_state(model, eval_mode=True, device=x.device):
        with _checks.input_checks(False):
            prepared = member.restart_targets(member.prepare_target(x, target))[0]
        start = x
        if member.random_start and member.eps > 0:
            norm = NORMS[str(member.norm)] if isinstance(member.norm, str) else member.norm
            gen = torch.Generator().manual_seed(seed)
            delta = norm.project(norm.random_init(x, member.eps, gen), member.eps)
            start = (x + delta).clamp(0, 1)
        d = torch.zeros_like(start, requires_grad=True)
        with torch.enable_grad():
            out = model_output(model(start + d))
            loss = member.evaluate(out, prepared, 0)[0]
            if not loss.requires_grad:
                return torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
            (grad,) = torch.autograd.grad(loss.float().sum(), d, allow_unused=True)
    if grad is None:
        return torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    flat = grad.flatten(1)
    return ~torch.isfinite(flat).all(1) | (flat.abs().sum(1) == 0)


def _flat_output(raw: Any) -> Tensor:
    out = model_output(raw)
    if isinstance(out, EncoderOutput):
        return torch.cat([out.cls.flatten(1), out.patches.flatten(1)], 1).double()
    return out.flatten(1).double()  # type: ignore[no-any-return]


def _subset(data: Any, subset: int, target_key: str | None) -> tuple[Tensor, Any]:
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], Tensor):
        x, t = data
        return x[:subset], (t[:subset] if isinstance(t, Tensor) else t)
    if isinstance(data, Tensor):
        return data[:subset], None
    xs: list[Tensor] = []
    ts: list[Any] = []
    for batch in data:
        x, t = unpack_batch(batch, target=target_key, where="check_evaluation")
        xs.append(x)
        ts.append(t)
        if sum(len(b) for b in xs) >= subset:
            break
    if not xs:
        raise _checks.SSLRobustValueError("check_evaluation got no data (an empty loader)")
    x = torch.cat(xs)[:subset]
    target = torch.cat(ts)[:subset] if ts and isinstance(ts[0], Tensor) else None
    return x, target


def _check_thresholds(thresholds: Mapping[str, float] | None) -> dict[str, float]:
    out = dict(DEFAULT_THRESHOLDS)
    for key, value in (thresholds or {}).items():
        if key not in INDICATORS:
            raise _checks.SSLRobustValueError(
                f"unknown indicator {key!r} in thresholds; valid ones are: {', '.join(INDICATORS)}"
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise _checks.SSLRobustValueError(
                f"thresholds[{key!r}] must be a fraction in [0, 1]; got {value!r}"
            )
        out[key] = float(value)
    return out


# ----------------------------------------------------------------------------- the checks
def check_evaluation(
    model: nn.Module | Callable[[Tensor], Any],
    data: tuple[Tensor, Any] | Tensor | Iterable[Any],
    *,
    task: str | TaskSpec,
    attack: Attack | Ensemble | None = None,
    subset: int = 128,
    info: DatasetInfo | None = None,
    surrogate: nn.Module | Callable[[Tensor], Any] | None = None,
    thresholds: Mapping[str, float] | None = None,
    square_queries: int = 1000,
    skip: Sequence[str] = (),
    seed: int = 0,
) -> EvaluationReport:
    """Check that an adversarial evaluation is reliable; returns an :class:`EvaluationReport`.

    Runs ``attack`` (or the task's attack, :attr:`~ssl_robust.tasks.TaskSpec.make_attack`;
    EmbedAttack for ``task="embedding"``) on the first ``subset`` samples of ``data``, and
    variants of it, and reports every indicator of :data:`INDICATORS` with its value,
    threshold, status and fix: unavailable gradients, randomized outputs, noise sensitivity,
    probability outputs, silent success, incomplete optimization, the unconstrained attack,
    eps monotonicity, more steps, more restarts, Square beating the white-box attack and,
    with a ``surrogate``, transfer. The checks cost a fixed multiple of the attack (about
    10 runs of it on the subset plus Square's ``square_queries`` forwards per sample that the
    attack left unbroken); ``report.cost`` gives the measured ratio.

    The model is evaluated in eval mode (a model in train mode gets a warning) and left as it
    was; the global RNG is restored.

    Args:
        model: the task model (or the encoder, for ``task="embedding"``).
        data: ``(images, target)`` tensors, an image tensor (embedding), or an iterable of
            batches (a DataLoader of :class:`~ssl_robust.data.Sample` dicts or tuples).
        task: ``"classification"``, ``"segmentation"``, ``"depth"``, ``"embedding"`` or a
            :class:`~ssl_robust.tasks.TaskSpec`.
        attack: the attack whose evaluation is checked (an Attack or an Ensemble on
            ``model``); default: the task's attack.
        subset: samples checked (64–256 is enough for the indicators).
        info: dataset facts (classes, ignore index, depth range); default: from the head.
        surrogate: a model of the same task for the transfer check (skipped without one).
        thresholds: indicator → threshold in [0, 1], overriding :data:`DEFAULT_THRESHOLDS`.
        square_queries: Square's query budget per sample.
        skip: indicators not to compute (their rows say ``skip``).
        seed: seed of every random draw.

    Raises:
        SSLRobustValueError: unknown task or indicator, thresholds outside [0, 1], an attack
            on another model, empty data.

    Example:
        >>> import torch
        >>> from ssl_robust.attacks import PGD
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4)).eval()
        >>> x, y = torch.rand(16, 3, 8, 8), torch.randint(0, 4, (16,))
        >>> report = check_evaluation(model, (x, y), task="classification",
        ...     attack=PGD(model, eps=0.1, steps=5), square_queries=50)
        >>> report.row("unavailable_gradients").status, report.row("transfer").status
        ('pass', 'skip')
        >>> "| indicator | value |" in report.to_markdown()
        True
    """
    limits = _check_thresholds(thresholds)
    subset = _checks.check_int("subset", subset, minimum=1)
    square_queries = _checks.check_int("square_queries", square_queries, minimum=1)
    for name in skip:
        if name not in INDICATORS:
            raise _checks.SSLRobustValueError(
                f"unknown indicator {name!r} in skip; valid ones are: {', '.join(INDICATORS)}"
            )
    spec = None if task == "embedding" else (task if isinstance(task, TaskSpec) else get_task(task))
    inner = _checks.unwrap_distributed(model)
    x, target = _subset(data, subset, None if spec is None else spec.target_key)
    params = list(inner.parameters()) if isinstance(inner, nn.Module) else []
    device = params[0].device if params else x.device
    x = _checks.check_images(x).to(device)
    target = target.to(device) if isinstance(target, Tensor) else target
    if spec is not None:
        info = info or spec.head_info(head_of(inner) or inner)
        if attack is None:
            attack = spec.make_attack(model, info, generator=torch.Generator().manual_seed(seed))
    elif attack is None:
        attack = EmbedAttack(model, generator=torch.Generator().manual_seed(seed))
    if not isinstance(attack, (Attack, Ensemble)):
        raise _checks.SSLRobustTypeError(
            f"attack must be an Attack or an Ensemble; got {type(attack).__name__}"
        )
    member = _members(attack)[0]
    if member.model is not model:
        raise _checks.SSLRobustValueError(
            "check_evaluation: the attack must be built on the model being checked (the same "
            "object); got an attack on another model"
        )
    modules = list(inner.modules()) if isinstance(inner, nn.Module) else []
    if any(m.training for m in modules):
        warnings.warn(
            "check_evaluation: the model is in train mode; it is checked in eval mode, as "
            "attacks run it (its modes are restored afterwards)",
            stacklevel=2,
        )
    modes = [m.training for m in modules]
    rng = torch.get_rng_state()
    try:
        for m in modules:
            m.training = False
        return _check(
            model, inner, x, target, spec, info, attack, member, limits, surrogate,
            square_queries, set(skip), seed,
        )  # fmt: skip
    finally:
        for m, mode in zip(modules, modes, strict=True):
            m.training = mode
        torch.set_rng_state(rng)


def _check(
    model: Any,
    inner: Any,
    x: Tensor,
    target: Any,
    spec: TaskSpec | None,
    info: DatasetInfo | None,
    attack: Attack | Ensemble,
    member: Attack,
    limits: dict[str, float],
    surrogate: Any,
    square_queries: int,
    skip: set[str],
    seed: int,
) -> EvaluationReport:
    started = time.perf_counter()
    judge: _Judge
    if spec is None:
        if not isinstance(member, EmbedAttack):
            raise _checks.SSLRobustTypeError(
                f"task='embedding' checks an EmbedAttack; got {type(member).__name__}"
            )
        judge = _EmbedJudge(member, inner, x)
    else:
        assert info is not None
        judge = _TaskJudge(spec, inner, target, info)
    sign = 1.0 if judge.higher_is_better else -1.0
    clean_q = judge.quality(x)
    floor_q = judge.floor(x)
    scale = max(abs(float(clean_q.mean() - floor_q.mean())), 1e-12)

    ref = clean_q.mean()

    def damage(q: Tensor) -> Tensor:  # 0 at the mean clean value, 1 at (or beyond) the floor
        return (sign * (ref - q) / scale).clamp(max=1.0)

    def run(a: Attack | Ensemble, images: Tensor = x) -> tuple[Tensor, Any]:
        if isinstance(a, Ensemble):
            return a.run(images, target).adversarial, None
        res = a.run(images, target)
        return res.adversarial, res

    clock = time.perf_counter()
    adv, result = run(attack)
    attack_seconds = time.perf_counter() - clock
    adv_q = judge.quality(adv)
    main = damage(adv_q)
    rows: list[CheckRow] = []
    degenerate = scale <= 1e-9

    def add(name: str, value: float | None, detail: str = "") -> None:
        ind = INDICATORS[name]
        if name in skip:
            rows.append(CheckRow(name, None, limits[name], "skip", "", "skipped on request"))
            return
        if value is None:
            rows.append(CheckRow(name, None, limits[name], "skip", "", detail))
            return
        status: Status = ind.severity if value > limits[name] else "pass"
        rows.append(CheckRow(name, value, limits[name], status,
                             ind.fix if status != "pass" else "", detail))  # fmt: skip

    def wanted(name: str) -> bool:
        return name not in skip

    # unavailable gradients (at the attack's start), per sample
    if wanted("unavailable_gradients"):
        bad = _input_grads(member, x, target, seed)
        add("unavailable_gradients", float(bad.float().mean()), f"{int(bad.sum())} of {len(bad)}")
    else:
        add("unavailable_gradients", None)
    # randomized outputs: three forwards of the same input
    with torch.no_grad():
        outs = [_flat_output(inner(x)) for _ in range(3)]
    tol = 1e-5 * (1 + outs[0].abs().amax(1))
    moved = torch.stack([(o - outs[0]).abs().amax(1) > tol for o in outs[1:]]).any(0)
    add("randomized_outputs", float(moved.float().mean()), f"{int(moved.sum())} of {len(moved)}")
    # noise sensitivity: uniform noise of eps/4 in the attack's norm
    norm = NORMS[str(member.norm)] if isinstance(member.norm, str) else member.norm
    gen = torch.Generator().manual_seed(seed + 1)
    noisy = (x + norm.random_init(x, member.eps / 4, gen)).clamp(0, 1)
    hurt = damage(judge.quality(noisy)) - damage(clean_q) > 0.5
    add(
        "noise_sensitivity",
        None if degenerate else float(hurt.float().mean()),
        "clean metric at the floor" if degenerate else f"{int(hurt.sum())} of {len(hurt)}",
    )
    # probability outputs
    with torch.no_grad():
        raw = model_output(inner(x))
    if isinstance(raw, Tensor) and raw.ndim >= 2 and raw.shape[1] >= 2 and spec is not None:
        r = raw.double()
        probs = (r >= 0).flatten(1).all(1) & (
            (r.sum(1) - 1).abs().reshape(r.shape[0], -1).amax(1) < 1e-3
        )
        add(
            "probability_outputs",
            float(probs.float().mean()),
            f"{int(probs.sum())} of {len(probs)}",
        )
    else:
        add("probability_outputs", None, "no class dimension in the output")
    # silent success and incomplete optimization, from the trace the attack recorded
    if result is None and isinstance(attack, Ensemble) and isinstance(member, Attack):
        result = _variant(member, seed).run(x, target) if not isinstance(member, Square) else None
    trace = None if result is None else result.trace
    if result is None or trace is None:
        add("silent_success", None, "the attack records no trace (Square)")
        add("incomplete_optimization", None, "the attack records no trace (Square)")
    else:
        if result.success is not None and result.trace_success is not None:
            silent = result.trace_success.any(0) & ~result.success
        else:
            best_seen = torch.nan_to_num(trace, nan=-math.inf).amax(0)
            silent = result.loss.to(best_seen.dtype) < best_seen - 1e-4 * (1 + best_seen.abs())
        add("silent_success", float(silent.float().mean()), f"{int(silent.sum())} of {len(silent)}")
        open_ = ~result.success if result.success is not None else torch.ones_like(silent)
        complete = ~trace.isnan().any(0) & open_
        steps = trace.shape[0] - 1
        if steps >= 2 and bool(complete.any()):
            t = trace[:, complete].double()
            k = max(1, round(steps / 5))
            span = (t.amax(0) - t.amin(0)).clamp_min(1e-12)
            rising = (t[-1] - t[-1 - k]) / span > 0.05
            add("incomplete_optimization", float(rising.float().mean()),
                f"{int(rising.sum())} of {int(complete.sum())} unbroken samples")  # fmt: skip
        else:
            add("incomplete_optimization", 0.0, "no unbroken sample with a full trace")
    # eps sweep and the unconstrained attack
    sweep: list[tuple[float, float]] = []
    big = _unbounded(member, x)
    if wanted("eps_monotonicity") or wanted("unconstrained_attack"):
        factors = (0.25, 0.5) if wanted("eps_monotonicity") else ()
        for i, f in enumerate(factors):
            a = _variant(attack, seed + 10 + i, eps=member.eps * f)
            sweep.append((member.eps * f, float(damage(judge.quality(run(a)[0])).mean())))
        sweep.append((member.eps, float(main.mean())))
        if wanted("eps_monotonicity") and 2 * member.eps < big:
            a = _variant(attack, seed + 12, eps=2 * member.eps)
            sweep.append((2 * member.eps, float(damage(judge.quality(run(a)[0])).mean())))
        unb = _variant(attack, seed + 13, eps=big)
        unb_damage = float(damage(judge.quality(run(unb)[0])).mean())
        sweep.append((big, unb_damage))
    if wanted("unconstrained_attack") and not degenerate:
        add("unconstrained_attack", max(0.0, 1.0 - unb_damage),
            f"mean normalized damage {unb_damage:.3g} at eps {big:.4g}")  # fmt: skip
    else:
        add("unconstrained_attack", None, "clean metric at the floor" if degenerate else "")
    if wanted("eps_monotonicity") and not degenerate:
        drops = [a[1] - b[1] for a, b in itertools.pairwise(sweep)]
        add("eps_monotonicity", max(0.0, *drops),
            "damage by eps: " + ", ".join(f"{e:.4g}: {d:.3g}" for e, d in sweep))  # fmt: skip
    else:
        add("eps_monotonicity", None, "clean metric at the floor" if degenerate else "")
    # more steps, more restarts
    for name, kw in (("more_steps", {"factor": 2}), ("more_restarts", {"extra_restarts": 2})):
        if (
            not wanted(name)
            or degenerate
            or (name == "more_restarts" and isinstance(member, Square))
        ):
            add(name, None, "Square has no restarts" if wanted(name) and not degenerate else "")
            continue
        more = damage(judge.quality(run(_variant(attack, seed + 20, **kw))[0]))  # type: ignore[arg-type]
        gain = float(more.mean() - main.mean())
        add(
            name,
            max(0.0, gain),
            f"mean normalized damage {float(main.mean()):.3g} -> {float(more.mean()):.3g}",
        )
    # Square among the white-box survivors
    survivors = main < 1 - 1e-6
    if wanted("square_beats_white_box") and not degenerate and not isinstance(member, Square):
        value, detail = 0.0, "no survivor"
        if bool(survivors.any()):
            sq = Square(
                model,
                eps=member.eps,
                norm=member.norm,  # type: ignore[arg-type]
                queries=square_queries,
                objective=member,
                generator=torch.Generator().manual_seed(seed + 30),
            )
            idx = survivors.nonzero()[:, 0]
            sub_t = target[idx] if isinstance(target, Tensor) else target
            adv_sq = sq.run(x[idx], sub_t).adversarial
            full = adv.clone()
            full[idx] = adv_sq
            beat = (damage(judge.quality(full)) > main + 0.05) & survivors
            value = float(beat.float().mean())
            detail = (
                f"{int(beat.sum())} of {int(survivors.sum())} survivors ({square_queries} queries)"
            )
        add("square_beats_white_box", value, detail)
    else:
        add("square_beats_white_box", None,
            "the checked attack is Square" if isinstance(member, Square) else "")  # fmt: skip
    # transfer from a surrogate
    if surrogate is not None and wanted("transfer") and not degenerate:
        adv_t = run(_variant(attack, seed + 40, model=surrogate))[0]
        beat = damage(judge.quality(adv_t)) > main + 0.05
        add("transfer", float(beat.float().mean()), f"{int(beat.sum())} of {len(beat)}")
    else:
        add("transfer", None, "no surrogate given" if surrogate is None else "")
    return EvaluationReport(
        task="embedding" if spec is None else spec.name,
        samples=int(x.shape[0]),
        attack=repr(attack).replace("\n", " "),
        metric=judge.metric,
        higher_is_better=judge.higher_is_better,
        clean=float(clean_q.mean()),
        attacked=float(adv_q.mean()),
        floor=float(floor_q.mean()),
        rows=rows,
        attack_seconds=attack_seconds,
        check_seconds=time.perf_counter() - started,
    )
