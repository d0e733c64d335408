"""Named fine-tuning recipes (``deacl``, ``fare``, ``multitask``) built from plain settings.

The command line (``ssl-robust finetune``) and the benchmark (``[encoders.defense]``) describe a
robust fine-tuning by a method name and tables of settings; :func:`make_trainer` turns them into
a trainer. :data:`DEFENSE_METHODS` is the one mapping from method names to builders.

Example:
    >>> from ssl_robust.defenses import FinetuneSpec
    >>> spec = FinetuneSpec(method="fare", fare={"tokens": "patch"})
    >>> spec.tasks_needed()
    ()
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from .. import _checks
from .combine import COMBINES
from .config import DeACLConfig, RobustConfig
from .objectives import FARE, DeACL
from .robust import RobustTrainer
from .task_at import TaskAT

__all__ = ["DEFENSE_METHODS", "FinetuneSpec", "make_trainer"]

Method = Literal["deacl", "fare", "multitask"]

_LOOP_KEYS = tuple(f.name for f in dataclasses.fields(RobustConfig))
_TASK_AT_KEYS = ("train_heads", "head_lr", "trades", "eps", "step_size", "steps", "weight")


def _table(value: object, where: str, valid: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _checks.SSLRobustTypeError(f"{where} must be a table of keys; got {value!r}")
    unknown = sorted(set(value) - set(valid))
    if unknown:
        raise _checks.SSLRobustValueError(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} in "
            f"{where}; valid keys: {', '.join(valid)}"
        )
    return dict(value)


@dataclass(frozen=True)
class FinetuneSpec:
    """A robust fine-tuning recipe as plain settings (TOML tables; budgets as floats).

    Attributes:
        method: ``"deacl"`` (DeACLTrainer: ``deacl`` holds the objective's fields),
            ``"fare"`` (FARE alone) or ``"multitask"`` (an anchor plus TaskAT on the heads of
            ``tasks``, fitted on the teacher).
        combine: ``"avg"``, ``"max"`` or ``"random"`` (multitask).
        anchor: the multitask anchor, ``"fare"`` or ``"deacl"``.
        tasks: the TaskAT heads of ``multitask``.
        loop: :class:`RobustConfig` fields (lr, epochs, warmup_epochs, seed, augment, ...).
        deacl: :class:`DeACL` fields (gamma, tokens, eps, step_size, steps, distance,
            attack_target).
        fare: :class:`FARE` fields (tokens, eps, step_size, steps, weight).
        task_at: :class:`TaskAT` fields (train_heads, head_lr, trades, eps, step_size, steps,
            weight).
    """

    method: Method = "deacl"
    combine: str = "avg"
    anchor: Literal["fare", "deacl"] = "fare"
    tasks: tuple[str, ...] = ("classification", "segmentation", "depth")
    loop: Mapping[str, Any] = field(default_factory=dict)
    deacl: Mapping[str, Any] = field(default_factory=dict)
    fare: Mapping[str, Any] = field(default_factory=dict)
    task_at: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _checks.check_choice("method", self.method, tuple(DEFENSE_METHODS))
        _checks.check_choice("combine", self.combine, COMBINES)
        _checks.check_choice("anchor", self.anchor, ("fare", "deacl"))
        if isinstance(self.tasks, str) or not isinstance(self.tasks, (list, tuple)):
            raise _checks.SSLRobustTypeError(
                f"tasks must be a list of task names; got {self.tasks!r}"
            )
        from ..tasks import get_task

        for t in self.tasks:
            get_task(t)
        object.__setattr__(self, "tasks", tuple(self.tasks))
        deacl_keys = tuple(
            f.name for f in dataclasses.fields(DeACLConfig) if f.name not in _LOOP_KEYS
        )
        object.__setattr__(self, "loop", _table(self.loop, "loop", _LOOP_KEYS))
        object.__setattr__(self, "deacl", _table(self.deacl, "deacl", deacl_keys))
        fare_keys = ("tokens", "eps", "step_size", "steps", "weight")
        object.__setattr__(self, "fare", _table(self.fare, "fare", fare_keys))
        task_at = _table(self.task_at, "task_at", _TASK_AT_KEYS)
        object.__setattr__(self, "task_at", task_at)
        self.check()

    def check(self) -> None:
        """Build every config and objective once (without a student) so bad values fail now."""
        if self.method == "deacl":
            DeACLConfig(**self.loop, **self.deacl)
            return
        RobustConfig(**self.loop)
        FARE(**self.fare)
        DeACL(**self.deacl)

    def tasks_needed(self) -> tuple[str, ...]:
        """The tasks whose heads (fitted on the teacher) the recipe trains with."""
        return self.tasks if self.method == "multitask" else ()

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain values."""
        return {
            "method": self.method,
            "combine": self.combine,
            "anchor": self.anchor,
            "tasks": list(self.tasks),
            "loop": dict(self.loop),
            "deacl": dict(self.deacl),
            "fare": dict(self.fare),
            "task_at": dict(self.task_at),
        }


def _deacl(spec: FinetuneSpec, student: nn.Module, heads: Mapping[str, nn.Module]) -> RobustTrainer:
    from .. import defenses  # looked up when called, so a replaced DeACLTrainer is used

    trainer: RobustTrainer = defenses.DeACLTrainer(
        student, config=DeACLConfig(**spec.loop, **spec.deacl)
    )
    return trainer


def _fare(spec: FinetuneSpec, student: nn.Module, heads: Mapping[str, nn.Module]) -> RobustTrainer:
    return RobustTrainer(student, objectives=[FARE(**spec.fare)], config=RobustConfig(**spec.loop))


def _multitask(
    spec: FinetuneSpec, student: nn.Module, heads: Mapping[str, nn.Module]
) -> RobustTrainer:
    missing = [t for t in spec.tasks if t not in heads]
    if missing:
        raise _checks.SSLRobustValueError(
            f"multitask fine-tuning needs a head fitted on the teacher for {missing}; got heads "
            f"for {sorted(heads)}"
        )
    anchor = FARE(**spec.fare) if spec.anchor == "fare" else DeACL(**spec.deacl)
    task_at = TaskAT(heads={t: heads[t] for t in spec.tasks}, **spec.task_at)
    return RobustTrainer(
        student,
        objectives=[anchor, task_at],
        combine=spec.combine,  # type: ignore[arg-type]
        config=RobustConfig(**spec.loop),
    )


#: Method name → builder ``(spec, student, heads) -> trainer`` (what ``register_defense``
#: would hold).
DEFENSE_METHODS: dict[
    str, Callable[[FinetuneSpec, nn.Module, Mapping[str, nn.Module]], RobustTrainer]
] = {
    "deacl": _deacl,
    "fare": _fare,
    "multitask": _multitask,
}


def make_trainer(
    spec: FinetuneSpec, student: nn.Module, *, heads: Mapping[str, nn.Module] | None = None
) -> RobustTrainer:
    """The trainer of a recipe: :class:`DeACLTrainer` for ``deacl``, else :class:`RobustTrainer`.

    Args:
        spec: the recipe.
        student: the encoder to fine-tune (the teacher is a frozen copy).
        heads: ``{task: head}`` fitted on the teacher, for ``multitask``.

    Example:
        >>> from ssl_robust.encoders import VisionTransformer
        >>> enc = VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2)
        >>> spec = FinetuneSpec(method="fare", loop={"epochs": 2, "warmup_epochs": 0})
        >>> trainer = make_trainer(spec, enc)
        >>> [o.name for o in trainer.objectives]
        ['fare']
    """
    if not isinstance(spec, FinetuneSpec):
        raise _checks.SSLRobustTypeError(f"spec must be a FinetuneSpec; got {type(spec).__name__}")
    return DEFENSE_METHODS[spec.method](spec, student, dict(heads or {}))
