"""What a benchmark can run, open to other packages: attack suites (table columns) and
defenses (fine-tuning methods of an encoder entry).

An attack suite adds one column to every cell: ``suite = ["paper", "<name>"]`` in a config (or
``--suite paper,<name>``) runs its attack next to the paper's EmbedAttack and task attack, and
the rows, ``results.csv``, ``tables.md`` and the CLI summary get its column. ``"strong"`` (the
``strong_attack`` column) is registered here with the same :func:`register_suite`.

A defense fine-tunes an encoder entry of the config (``[encoders.defense] method = "<name>"``;
``[encoders.deacl]`` is DeACL's older spelling). ``"deacl"`` is registered here with the same
:func:`register_defense`.

Example:
    >>> list_suites()[:1], list_defenses()[:1]
    (['strong'], ['deacl'])
    >>> get_suite("strong").column
    'strong_attack'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import _checks
from ..registry import Registry

if TYPE_CHECKING:
    from ..encoders import Encoder
    from .context import RunContext
    from .spec import DatasetSpec, EncoderSpecEntry

__all__ = [
    "DefenseSpec",
    "SuiteSpec",
    "defense_origin",
    "get_defense",
    "get_suite",
    "list_defenses",
    "list_suites",
    "register_defense",
    "register_suite",
    "suite_origin",
]


@dataclass(frozen=True)
class SuiteSpec:
    """An attack column of the benchmark.

    Attributes:
        name: what ``attack.suite`` / ``--suite`` names.
        make_attack: ``(model, task, info, *, eps, settings) -> Attack | Ensemble``: the
            attack of one cell, given the task model, its :class:`~ssl_robust.tasks.TaskSpec`,
            the dataset's :class:`~ssl_robust.data.DatasetInfo`, the budget and the config's
            :class:`~ssl_robust.bench.AttackSpec` (steps, step size, ...). It must return
            adversarial images within ``eps`` of the clean ones.
        column: the key of its value in rows, ``results.csv`` and the table (default
            ``name``); it must not be a standard row field.
        label: its title in ``tables.md`` (default ``column``).
    """

    name: str
    make_attack: Callable[..., Any]
    column: str = ""
    label: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or self.name == "paper":
            raise _checks.SSLRobustValueError(
                f"a suite name must be a non-empty string other than 'paper'; got {self.name!r}"
            )
        if not callable(self.make_attack):
            raise _checks.SSLRobustTypeError(
                f"SuiteSpec {self.name!r}: make_attack must be callable; got "
                f"{type(self.make_attack).__name__}"
            )
        column = self.column or self.name
        reserved = ("task", "dataset", "encoder", "encoder_type", "metric", "clean",
                    "embed_attack", "task_attack")  # fmt: skip
        if column in reserved:
            raise _checks.SSLRobustValueError(
                f"SuiteSpec {self.name!r}: column {column!r} is a standard row field; choose "
                "another"
            )
        object.__setattr__(self, "column", column)
        object.__setattr__(self, "label", self.label or column)


@dataclass(frozen=True)
class DefenseSpec:
    """A fine-tuning method the benchmark can run on an encoder entry.

    Attributes:
        name: what ``[encoders.defense] method = ...`` names.
        fine_tune: ``(ctx, entry, base, eval_dataset) -> Encoder``: fine-tunes ``base`` (the
            built base entry's encoder; copy it, never modify it) for ``entry`` and returns
            the robust encoder. ``entry.deacl`` holds the entry's defense table
            (:class:`~ssl_robust.bench.DeACLSpec`: ``base``, ``dataset``, ``train_size``,
            ``batch_size``, ``config`` (the method's own options), ``checkpoint``);
            ``ctx`` is the run's :class:`~ssl_robust.bench.context.RunContext` (``spec``,
            ``store.out`` to cache weights, ``device``, ``progress``); ``eval_dataset`` the
            dataset entry it was trained for.
        description: one line for ``ssl-robust list``.
    """

    name: str
    fine_tune: Callable[..., Any]
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise _checks.SSLRobustValueError(
                f"a defense name must be a non-empty string; got {self.name!r}"
            )
        if not callable(self.fine_tune):
            raise _checks.SSLRobustTypeError(
                f"DefenseSpec {self.name!r}: fine_tune must be callable; got "
                f"{type(self.fine_tune).__name__}"
            )


_SUITES: Registry[SuiteSpec] = Registry("suite", entry_type=SuiteSpec)
_DEFENSES: Registry[DefenseSpec] = Registry("defense", entry_type=DefenseSpec)


def register_suite(spec: SuiteSpec, *, overwrite: bool = False) -> SuiteSpec:
    """Register an attack column of the benchmark (see :class:`SuiteSpec`).

    Raises:
        SSLRobustTypeError: not a SuiteSpec.
        SSLRobustValueError: the name is taken (naming who registered it), unless
            ``overwrite=True``.
    """
    return _SUITES.add(spec, overwrite=overwrite)


def register_defense(spec: DefenseSpec, *, overwrite: bool = False) -> DefenseSpec:
    """Register a fine-tuning method of the benchmark (see :class:`DefenseSpec`).

    Raises:
        SSLRobustTypeError: not a DefenseSpec.
        SSLRobustValueError: the name is taken (naming who registered it), unless
            ``overwrite=True``.
    """
    return _DEFENSES.add(spec, overwrite=overwrite)


def get_suite(name: str | SuiteSpec) -> SuiteSpec:
    """The :class:`SuiteSpec` of ``name`` (unknown names list the registered ones)."""
    return _SUITES.get(name)


def get_defense(name: str | DefenseSpec) -> DefenseSpec:
    """The :class:`DefenseSpec` of ``name`` (unknown names list the registered ones)."""
    return _DEFENSES.get(name)


def list_suites() -> list[str]:
    """The registered attack suites beyond ``"paper"`` (which every benchmark runs)."""
    return _SUITES.names()


def list_defenses() -> list[str]:
    """The registered fine-tuning methods."""
    return _DEFENSES.names()


def suite_origin(name: str) -> str:
    """Where a suite comes from (``"built-in"``, a distribution, a package)."""
    return _SUITES.origin(name)


def defense_origin(name: str) -> str:
    """Where a defense comes from (``"built-in"``, a distribution, a package)."""
    return _DEFENSES.origin(name)


def _strong(model: Any, task: Any, info: Any, *, eps: float, settings: Any) -> Any:
    return task.make_strong_attack(model, info, eps=eps, steps=settings.strong_steps)


def _robust(
    ctx: RunContext, entry: EncoderSpecEntry, base: Encoder, eval_ds: DatasetSpec
) -> Encoder:
    from .history import defended_encoder  # the trainer's imports, only when it runs

    return defended_encoder(ctx, entry, base, eval_ds)


register_suite(
    SuiteSpec(
        "strong",
        _strong,
        column="strong_attack",
        label="strong_attack",
    )
)
register_defense(
    DefenseSpec(
        "deacl",
        _robust,
        description="DeACL (Zhang et al. 2022; paper §3.3): the cosine distillation with an "
        "EmbedAttack term, ssl_robust.defenses.DeACLTrainer",
    )
)
register_defense(
    DefenseSpec(
        "fare",
        _robust,
        description="FARE (Schlarmann et al. 2024): squared distance of the attacked student "
        "to the clean teacher, on CLS and/or patch tokens, ssl_robust.defenses.FARE",
    )
)
register_defense(
    DefenseSpec(
        "multitask",
        _robust,
        description="multi-task: a FARE (or DeACL) anchor plus each task head's own attack "
        "(PGD, SegPGD, DepthPGD) on the base entry's heads, ssl_robust.defenses.TaskAT",
    )
)
