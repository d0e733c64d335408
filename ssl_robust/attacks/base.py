"""The :class:`Attack` base: settings, checks and state safety around the shared PGD core."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn
from typing_extensions import TypedDict

from .. import _checks
from ..encoders.base import EncoderOutput
from .core import NORMS, SCHEDULES, AttackResult, LossFn, check_eot_iter, pgd

__all__ = ["Attack", "AttackOptions", "model_output", "preserved_state"]


class AttackOptions(TypedDict, total=False):
    """The keyword options every attack accepts (for ``**kwargs: Unpack[AttackOptions]``)."""

    eps: float
    step_size: float
    steps: int
    norm: Literal["linf", "l2"]
    random_start: bool
    early_stop: bool
    select: Literal["best", "last"]
    generator: torch.Generator | None
    eval_mode: bool
    schedule: Literal["fixed", "apgd"]
    restarts: int
    eot_iter: int


@contextmanager
def preserved_state(model: object, *, eval_mode: bool, device: torch.device) -> Iterator[None]:
    """Run a block with ``model`` frozen for an attack and restore everything afterwards.

    Inside: every module in eval mode (when ``eval_mode``), every parameter with
    ``requires_grad=False`` (so the graph only reaches the perturbation). Afterwards, also when
    the block raises: the train/eval flag of every module, the ``requires_grad`` flag of every
    parameter, the buffers (when the model ran in train mode, e.g. BatchNorm statistics) and
    the global RNG state (CPU and ``device``) are exactly as before. Parameter ``.grad`` is
    never written.
    """
    modules = list(model.modules()) if isinstance(model, nn.Module) else []
    modes = [m.training for m in modules]
    params = list(model.parameters()) if isinstance(model, nn.Module) else []
    flags = [p.requires_grad for p in params]
    buffers: list[tuple[Tensor, Tensor]] = []
    if isinstance(model, nn.Module) and not eval_mode:
        buffers = [(b, b.detach().clone()) for b in model.buffers()]
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    try:
        if eval_mode:
            for m in modules:
                m.training = False
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for m, mode in zip(modules, modes, strict=True):
            m.training = mode
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state(cuda_rng, device)


def model_output(raw: Any) -> Any:
    """What the losses see of a model's output, in at least float32.

    Tensors and :class:`~ssl_robust.encoders.EncoderOutput` pass through; an output object
    with a ``logits`` tensor (Hugging Face ``ModelOutput``, a dict) gives its logits. fp16/bf16
    values (autocast, half models) are upcast so every attack loss is computed in float32.
    """
    if not isinstance(raw, (Tensor, EncoderOutput)):
        logits = raw.get("logits") if isinstance(raw, Mapping) else getattr(raw, "logits", None)
        if isinstance(logits, Tensor):
            raw = logits
    if isinstance(raw, Tensor):
        return raw.float() if raw.is_floating_point() and raw.dtype.itemsize < 4 else raw
    if isinstance(raw, EncoderOutput) and raw.cls.dtype.itemsize < 4:
        return EncoderOutput(raw.cls.float(), raw.patches.float(), raw.grid)
    return raw


def _select(target: Any, idx: Tensor, batch: int) -> Any:
    """The rows ``idx`` of a per-sample target (tensor, EncoderOutput, tuple or None)."""
    if target is None or idx.numel() == batch:
        return target
    if isinstance(target, (Tensor, EncoderOutput)):
        return target[idx]
    if isinstance(target, tuple):
        return tuple(_select(t, idx, batch) for t in target)
    return target


def _options_of(cls: type) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.kind is inspect.Parameter.KEYWORD_ONLY:
                names.add(p.name)
    return names | set(AttackOptions.__annotations__)


class Attack:
    """Base class of the attacks: a per-sample ``loss`` plugged into the shared PGD core.

    Subclasses define :meth:`loss` and, where the attack has them, :meth:`success` (per-sample
    success criterion, enables ``early_stop`` and success-first best-iterate selection),
    :meth:`score` (what ``select="best"`` maximizes, the loss by default) and
    :meth:`prepare_target` (checks and precomputation of the target). An attack that gets all
    three from one computation overrides :meth:`evaluate` instead. :meth:`damage` (the task's
    per-sample criterion) makes an attack usable in an :class:`~ssl_robust.attacks.Ensemble`;
    :meth:`restart_targets` gives one target per objective (APGD-T's target classes).
    ``__call__`` and :meth:`run` are never overridden: they check the inputs, freeze the model
    (eval mode, ``requires_grad=False``), run :func:`~ssl_robust.attacks.core.pgd` and restore
    the model.

    The model is held by reference, not as a submodule, and no state survives between calls.

    Args:
        model: the network under attack (an ``nn.Module`` or any callable).
        eps: radius of the threat model on the [0, 1] image scale (8/255, not 8).
        step_size: step length on the [0, 1] scale.
        steps: number of gradient steps.
        norm: threat model, ``"linf"`` or ``"l2"``.
        random_start: start from a uniform draw in the eps-ball.
        early_stop: stop updating samples that already succeeded (attacks with a success
            criterion); same result under ``select="best"``, less work.
        select: ``"best"`` (first successful or highest-loss iterate per sample) or ``"last"``.
        generator: random source of the start; the global RNG is never used.
        eval_mode: run the model in eval mode during the attack (its modes are restored after).
        schedule: ``"fixed"`` (the paper's PGD, fixed ``step_size``) or ``"apgd"`` (APGD's
            per-sample step-size control with momentum; first step 2·eps, ``step_size`` unused).
        restarts: runs from fresh random starts (>= 1); later runs only on the samples not yet
            successful, each sample keeping its worst case.
        eot_iter: forwards averaged per step for randomized models (expectation over
            transformation, AutoAttack's ``version="rand"``): the gradient, the loss and the
            score are means over ``eot_iter`` draws, and a sample counts as broken only when
            it is broken in every draw. With ``eot_iter > 1`` and a ``generator``, the model's
            own randomness (the global RNG, restored afterwards) is seeded from the generator,
            so the attack is deterministic. ``1`` (default): one forward per step.
    """

    #: The task whose per-sample criterion :meth:`damage` measures (None: not for ensembles).
    task: ClassVar[str | None] = None

    def __init__(
        self,
        model: nn.Module | Callable[[Tensor], Any],
        *,
        eps: float = 8 / 255,
        step_size: float = 2 / 255,
        steps: int = 20,
        norm: Literal["linf", "l2"] = "linf",
        random_start: bool = True,
        early_stop: bool = False,
        select: Literal["best", "last"] = "best",
        generator: torch.Generator | None = None,
        eval_mode: bool = True,
        schedule: Literal["fixed", "apgd"] = "fixed",
        restarts: int = 1,
        eot_iter: int = 1,
        **unknown: Any,
    ) -> None:
        _checks.check_no_unknown(unknown, _options_of(type(self)), where=type(self).__name__)
        if not callable(model):
            raise _checks.SSLRobustTypeError(
                f"model must be an nn.Module or a callable; got {type(model).__name__}"
            )
        self.model = model
        self.norm = _checks.check_choice("norm", norm, tuple(NORMS))
        self.eps = _checks.check_budget("eps", eps, norm=self.norm)
        self.step_size = _checks.check_budget("step_size", step_size, norm=self.norm)
        self.steps = _checks.check_int("steps", steps, minimum=0)
        self.select = _checks.check_choice("select", select, ("best", "last"))
        self.random_start = bool(random_start)
        self.early_stop = bool(early_stop)
        if self.early_stop and type(self).success is Attack.success:
            raise _checks.SSLRobustValueError(
                f"early_stop=True cannot have an effect on {type(self).__name__}: it has no "
                "per-sample success criterion, so no sample is ever done and every step runs "
                "anyway; drop early_stop (it only exists for attacks that succeed, e.g. PGD "
                "and SegPGD)"
            )
        self.generator = _checks.check_generator(generator)
        self.eval_mode = bool(eval_mode)
        self.schedule = _checks.check_choice("schedule", schedule, tuple(SCHEDULES))
        self.restarts = _checks.check_int("restarts", restarts, minimum=1)
        self.eot_iter = check_eot_iter(eot_iter)

    # ----------------------------------------------------------------- subclass hooks
    def loss(self, output: Any, target: Any, step: int) -> Tensor:
        """Per-sample loss (B,) to maximize, from the model output on the active samples."""
        raise NotImplementedError

    def success(self, output: Any, target: Any) -> Tensor | None:
        """Per-sample success (B,) bool, or None when the attack has no such criterion."""
        return None

    def score(self, output: Any, target: Any) -> Tensor | None:
        """What ``select="best"`` maximizes per sample; None means the loss."""
        return None

    def evaluate(
        self, output: Any, target: Any, step: int
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """``(loss, success, score)`` of one forward; by default :meth:`loss`, :meth:`success`
        and :meth:`score`. Override it when the three share work (one pass over the output)."""
        return (
            self.loss(output, target, step),
            self.success(output, target),
            self.score(output, target),
        )

    def damage(self, output: Any, target: Any) -> tuple[Tensor, Tensor]:
        """The task's per-sample criterion: ``(damage, broken)``, both (B,).

        ``damage`` grows as the attack hurts the sample more (comparable across the attacks of
        one task); ``broken`` marks samples at the worst possible outcome, which an ensemble
        does not attack again. Attacks without it cannot join an ensemble.
        """
        raise _checks.SSLRobustTypeError(
            f"{type(self).__name__} defines no per-sample damage criterion, so it cannot be "
            "part of an Ensemble"
        )

    def restart_targets(self, target: Any) -> list[Any]:
        """The prepared targets of the successive objectives, each run ``restarts`` times.

        One by default; APGD-T returns one per target class.
        """
        return [target]

    def prepare_target(self, images: Tensor, target: Any) -> Any:
        """Check (and precompute) the target once per call; runs with the model frozen."""
        return target

    def check_output(self, output: Any, target: Any) -> None:
        """Check the model output against the target once per call (first forward)."""

    # ----------------------------------------------------------------- public entry points
    def run(self, images: Tensor, target: Any = None) -> AttackResult:
        """Attack ``images`` and return the :class:`AttackResult`.

        Args:
            images: (B, C, H, W) floating-point images in [0, 1]. Not modified.
            target: what the attack needs (labels, masks, depth, clean embeddings), see the
                subclass.
        """
        _checks.check_image_tensor(images)
        model = _checks.unwrap_distributed(self.model)
        _checks.check_device(model, images)
        device = images.device
        batch = images.shape[0]
        with preserved_state(model, eval_mode=self.eval_mode, device=device):
            self._seed_model_randomness(device)
            with _checks.input_checks(False):  # pgd() checks the values once
                target = self.prepare_target(images, target)
            checked = False

            def objective(prepared: Any) -> LossFn:
                def loss_fn(
                    x: Tensor, idx: Tensor, step: int
                ) -> tuple[Tensor, Tensor | None, Tensor | None]:
                    nonlocal checked
                    output = model_output(model(x))
                    tgt = _select(prepared, idx, batch)
                    # Losses in float32 whatever the caller's autocast (the output is upcast).
                    with torch.autocast(x.device.type, enabled=False):
                        if not checked:
                            self.check_output(output, tgt)
                            checked = True
                        return self.evaluate(output, tgt, step)

                return loss_fn

            return self._optimize([objective(t) for t in self.restart_targets(target)], images)

    def _optimize(self, loss_fns: list[LossFn], images: Tensor) -> AttackResult:
        """The optimizer behind :meth:`run` (the PGD core; :class:`Square` runs its own)."""
        return pgd(
            loss_fns,
            images,
            eps=self.eps,
            step_size=self.step_size,
            steps=self.steps,
            norm=self.norm,  # type: ignore[arg-type]
            random_start=self.random_start,
            early_stop=self.early_stop,
            select=self.select,  # type: ignore[arg-type]
            generator=self.generator,
            schedule=self.schedule,  # type: ignore[arg-type]
            restarts=self.restarts,
            eot_iter=self.eot_iter,
        )

    def _seed_model_randomness(self, device: torch.device) -> None:
        """With EOT and a generator: seed the global RNG (restored by ``preserved_state``)
        from the generator, so a randomized model's draws are reproducible."""
        if self.eot_iter == 1 or self.generator is None:
            return
        gen = self.generator
        seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device).item())
        torch.default_generator.manual_seed(seed)
        if device.type == "cuda":
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)

    def __call__(self, images: Tensor, target: Any = None) -> Tensor:
        """Attack ``images``; returns the adversarial images (same shape, dtype, device)."""
        return self.run(images, target).adversarial

    def extra_repr(self) -> str:
        return (
            f"eps={self.eps:.4g}, step_size={self.step_size:.4g}, steps={self.steps}, "
            f"norm={self.norm!r}, random_start={self.random_start}, "
            f"early_stop={self.early_stop}, select={self.select!r}, "
            f"schedule={self.schedule!r}, restarts={self.restarts}"
            + (f", eot_iter={self.eot_iter}" if self.eot_iter != 1 else "")
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"
