"""Task-aware adversarial training (TaskAT): each task head's own attack on the student."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _checks
from ..attacks.base import Attack
from ..encoders.base import EncoderOutput
from .objectives import Features, Objective, StepInputs, Terms

__all__ = ["TaskAT"]

AttackFactory = Callable[[nn.Module], Attack]


class TaskAT(Objective):
    r"""Task-aware adversarial training: each task head's own attack on the student.

    For every head (a linear head fitted on the teacher with :func:`~ssl_robust.adaptors.fit`)
    the task attack (the task's PGD / SegPGD / DepthPGD from :mod:`ssl_robust.tasks`, or an
    :class:`~ssl_robust.attacks.Attack` you give) runs once per step on
    ``TaskModel(student, head)`` (for depth the tokens the head reads:
    :attr:`~ssl_robust.tasks.TaskSpec.encoder_view`), and the head's task loss on the
    adversarial images is minimized, per image:

    .. math::
        L_{task} = \ell_{task}(h(f_R(x_{adv})), y) \;+\; \beta\, D(h(f_R(x)), h(f_R(x_{adv})))

    with the optional TRADES-style consistency ``D`` (``trades = β``): the KL divergence of
    the softmax outputs (classification, segmentation: averaged over pixels) or, for
    single-channel outputs (depth), the mean squared difference of the log predictions.

    Heads are frozen (``requires_grad=False``, eval mode, never updated: no ``.grad``) unless
    ``train_heads=True``; then they join the trainer's optimizer at ``head_lr``. Heads always
    run in eval mode (the BatchNorm statistics of their fit are kept). Batches must carry
    each head's target (``label``, ``mask``, ``depth``). TaskAT keeps no clean quality by
    itself: the trainer refuses it without an anchor (:class:`FARE` or :class:`DeACL`).

    Args:
        heads: ``{task: head}``, a head per task name (``"classification"``, ...).
        attacks: ``{task: Attack or factory}``: an Attack on ``TaskModel(student, head)``, or
            a callable building it from that TaskModel; tasks left out use the task's attack.
        train_heads: co-train the heads.
        head_lr: learning rate of co-trained heads.
        trades: weight β of the consistency term (0 = off).
        eps, step_size, steps: settings of the tasks' own attacks (L∞, [0, 1] scale).
        ignore_index: mask label ignored by the segmentation loss.
        weight: factor on the losses: a float for every task, or ``{task: factor}`` (tasks
            left out get 1.0), e.g. ``{"depth": 3.0}`` to give one task more of the step.

    Raises:
        SSLRobustValueError: unknown task names, a head of another task, bad settings.

    Example:
        >>> from ssl_robust.adaptors import LinearClassifier
        >>> from ssl_robust.defenses import TaskAT
        >>> TaskAT(heads={"classification": LinearClassifier(16, 4)}).perturbations()
        ['classification']
    """

    name: ClassVar[str] = "task_at"

    def __init__(
        self,
        *,
        heads: Mapping[str, nn.Module],
        attacks: Mapping[str, Attack | AttackFactory] | None = None,
        train_heads: bool = False,
        head_lr: float = 1e-3,
        trades: float = 0.0,
        eps: float = 4 / 255,
        step_size: float = 1 / 255,
        steps: int = 5,
        ignore_index: int = 255,
        weight: float | Mapping[str, float] = 1.0,
    ) -> None:
        from ..tasks import get_task  # tasks builds on adaptors and attacks

        if not isinstance(heads, Mapping) or not heads:
            raise _checks.SSLRobustValueError(
                "TaskAT needs heads={task: head}, at least one; got "
                f"{heads if not isinstance(heads, Mapping) else '{}'}"
            )
        self.specs = {}
        for task, head in heads.items():
            spec = get_task(task)
            if not isinstance(head, nn.Module):
                raise _checks.SSLRobustTypeError(
                    f"heads[{task!r}] must be an nn.Module head; got {type(head).__name__}"
                )
            head_task = getattr(_checks.inner_module(head), "task", task)
            if head_task != task:
                raise _checks.SSLRobustValueError(
                    f"heads[{task!r}] is a {head_task} head ({type(head).__name__}); key it "
                    f"by its task, {head_task!r}"
                )
            self.specs[task] = spec
        attacks = dict(attacks or {})
        unknown = sorted(set(attacks) - set(heads))
        if unknown:
            raise _checks.SSLRobustValueError(
                f"attacks for tasks without a head: {unknown}; heads: {sorted(heads)}"
            )
        if not isinstance(train_heads, bool):
            raise _checks.SSLRobustTypeError(
                f"train_heads must be a bool; got {type(train_heads).__name__}"
            )
        self.heads: dict[str, nn.Module] = dict(heads)
        self.user_attacks = attacks
        self.train_heads = train_heads
        self.head_lr = _checks.check_positive_float("head_lr", head_lr)
        self.trades = _checks.check_positive_float("trades", trades, allow_zero=True)
        self.eps = _checks.check_budget("eps", eps, norm="linf")
        self.step_size = _checks.check_budget("step_size", step_size, norm="linf")
        self.steps = _checks.check_int("steps", steps, minimum=0)
        self.ignore_index = _checks.check_ignore_index(ignore_index)
        self.weight = _task_weights(weight, list(self.heads))
        self.task_attacks: dict[str, Attack] = {}
        self._views: dict[str, bool] = {}
        #: The dataset facts each head carries (classes, ignore index, depth range).
        self.infos = {
            task: _with_ignore_index(self.specs[task].head_info(head), self.ignore_index)
            for task, head in self.heads.items()
        }
        for head in self.heads.values():
            head.eval()
            if not train_heads:
                head.requires_grad_(False)

    @property
    def weights(self) -> dict[str, float]:
        """The factor on each task's loss (``weight`` resolved per head)."""
        if isinstance(self.weight, dict):
            return {t: self.weight.get(t, 1.0) for t in self.heads}
        return dict.fromkeys(self.heads, self.weight)

    @property
    def tokens(self) -> str:
        return "cls+patch" if any(s.dense for s in self.specs.values()) else "cls"

    @property
    def needs_raw(self) -> bool:
        return any(self._views.values())

    def check_output(self, output: Any) -> None:
        if not isinstance(output, EncoderOutput):
            raise _checks.SSLRobustTypeError(
                "TaskAT needs an ssl_robust Encoder (returning EncoderOutput) as the student; "
                f"got output {type(output).__name__}"
            )

    def check_student(self, student: nn.Module) -> None:
        """Refuse heads whose embedding size is not the student's (both sizes named)."""
        dim = getattr(student, "embed_dim", None)
        for task, head in self.heads.items():
            width = getattr(_checks.inner_module(head), "embed_dim", None)
            if isinstance(dim, int) and isinstance(width, int) and width != dim:
                raise _checks.SSLRobustValueError(
                    f"the {task} head expects embeddings of size {width} but the student "
                    f"produces {dim}; fit the head on the teacher (the pretrained student)"
                )

    def head_parameters(self) -> list[nn.Parameter]:
        """The co-trained heads' parameters (empty when the heads are frozen)."""
        if not self.train_heads:
            return []
        return [p for h in self.heads.values() for p in h.parameters() if p.requires_grad]

    def bind(self, student: nn.Module, generator: torch.Generator) -> None:
        from ..adaptors import TaskModel

        self.check_student(student)
        self.task_attacks = {}
        for task, head in self.heads.items():
            spec = self.specs[task]
            view = spec.encoder_view(student)  # type: ignore[arg-type]
            self._views[task] = view is not student
            model = TaskModel(view, head)
            given = self.user_attacks.get(task)
            if isinstance(given, Attack):
                attack = given
            elif given is not None:
                attack = given(model)
                if not isinstance(attack, Attack):
                    raise _checks.SSLRobustTypeError(
                        f"attacks[{task!r}] must build an Attack; got {type(attack).__name__}"
                    )
            else:
                attack = spec.make_attack(
                    model, self.infos[task], eps=self.eps, step_size=self.step_size,
                    steps=self.steps, generator=generator,
                )  # fmt: skip
            self.task_attacks[task] = attack

    def perturbations(self) -> list[str]:
        return list(self.heads)

    def target_keys(self) -> dict[str, str]:
        return {spec.target_key: f"TaskAT's {task} head" for task, spec in self.specs.items()}

    def attack(self, index: int, inputs: StepInputs) -> Tensor:
        task = list(self.heads)[index]
        target = self._target(task, inputs)
        return self.task_attacks[task](inputs.images, target)

    def _target(self, task: str, inputs: StepInputs) -> Tensor:
        spec = self.specs[task]
        head = self.heads[task]
        target = spec.check_target(
            inputs.targets[spec.target_key], inputs.images, head, self.ignore_index
        )
        target = target.to(inputs.images.device)
        return target[:, 0] if spec.dense and target.ndim == 4 else target

    def _head_out(self, task: str, feats: Features, hw: tuple[int, int]) -> Tensor:
        out = feats.raw if self._views.get(task) else feats.out
        if isinstance(out, EncoderOutput) and out.cls.dtype.itemsize < 4:  # bf16 autocast
            out = EncoderOutput(cls=out.cls.float(), patches=out.patches.float(), grid=out.grid)
        return self.heads[task](out, hw)  # type: ignore[no-any-return]

    def _per_sample(self, task: str, out: Tensor, target: Tensor) -> Tensor:
        """The task's per-sample loss (:attr:`~ssl_robust.tasks.TaskSpec.loss`), (B,)."""
        return self.specs[task].loss(out, target, self.infos[task]).float()

    def terms(
        self,
        inputs: StepInputs,
        clean: Features,
        adversarial: Mapping[int, Features],
        *,
        with_clean: bool,
    ) -> Terms:
        hw = (int(inputs.images.shape[-2]), int(inputs.images.shape[-1]))
        result = Terms(adversarial={})
        tasks = list(self.heads)
        for index, feats in adversarial.items():
            task = tasks[index]
            target = self._target(task, inputs)
            adv_out = self._head_out(task, feats, hw)
            adv = self._per_sample(task, adv_out, target)
            clean_out = None
            if with_clean or self.trades > 0:
                clean_out = self._head_out(task, clean, hw)
            if self.trades > 0:
                assert clean_out is not None
                adv = adv + self.trades * _consistency(clean_out, adv_out)
            factor = self.weights[task]
            result.adversarial[index] = factor * adv
            result.stats[f"{task}_adv"] = adv.detach().mean()
            if with_clean:
                assert clean_out is not None
                result.clean[index] = factor * self._per_sample(task, clean_out, target)
        if adversarial and len(adversarial) == len(tasks):
            result.total = torch.stack([v.mean() for v in result.adversarial.values()]).mean()
        return result

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tasks": sorted(self.heads),
            "attacks": {t: type(a).__name__ for t, a in sorted(self.user_attacks.items())},
            "train_heads": self.train_heads,
            "head_lr": self.head_lr,
            "trades": self.trades,
            "eps": self.eps,
            "step_size": self.step_size,
            "steps": self.steps,
            "ignore_index": self.ignore_index,
            "weight": self.weight,
        }


def _task_weights(weight: object, tasks: list[str]) -> float | dict[str, float]:
    """Check ``weight``: a float (every task), or ``{task: factor}`` over trained tasks."""
    if not isinstance(weight, Mapping):
        return _checks.check_positive_float("weight", weight)
    unknown = sorted(set(weight) - set(tasks))
    if unknown:
        raise _checks.SSLRobustValueError(
            f"weight names tasks without a head: {unknown}; heads: {sorted(tasks)}"
        )
    return {str(t): _checks.check_positive_float(f"weight[{t!r}]", w) for t, w in weight.items()}


def _with_ignore_index(info: Any, ignore_index: int) -> Any:
    if getattr(info, "ignore_index", ignore_index) == ignore_index:
        return info
    return dataclasses.replace(info, ignore_index=ignore_index)


def _consistency(clean: Tensor, adv: Tensor) -> Tensor:
    """Per-sample TRADES-style distance between clean and adversarial head outputs."""
    clean, adv = clean.float(), adv.float()
    if clean.ndim >= 2 and clean.shape[1] > 1:  # class scores: KL(p_clean || p_adv)
        kl = F.kl_div(
            F.log_softmax(adv, 1), F.log_softmax(clean, 1), log_target=True, reduction="none"
        ).sum(1)
        return kl if kl.ndim == 1 else kl.flatten(1).mean(1)
    log_c = clean.clamp_min(1e-6).log()  # single-channel maps (depth): log-space MSE
    log_a = adv.clamp_min(1e-6).log()
    return (log_a - log_c).pow(2).flatten(1).mean(1)
