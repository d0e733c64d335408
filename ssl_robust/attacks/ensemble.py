"""Worst case over several attacks per sample: :class:`Ensemble` and the :func:`strong_attack`
presets (AutoAttack-style for classification, SEA-style for segmentation).

Croce & Hein, ICML 2020 (AutoAttack); Croce, Singh & Hein, ECCV 2024 (SEA).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .. import _checks
from .base import Attack, _select, model_output, preserved_state
from .classification import APGD, PGD
from .core import SeededStart, check_eot_iter
from .depth import DepthPGD
from .embed import EmbedAttack
from .segmentation import SegPGD
from .square import Square

__all__ = ["STRONG_TASKS", "STRONG_VERSIONS", "Ensemble", "EnsembleResult", "strong_attack"]


@dataclass(frozen=True)
class EnsembleResult:
    """What :meth:`Ensemble.run` returns.

    Attributes:
        adversarial: (B, ...) per sample the most damaging example over the members (the clean
            image when no member did any damage beyond it), same dtype and device as the input.
        damage: (B,) the task's per-sample damage of ``adversarial`` (classification: logit
            margin; segmentation: 1 − pixel accuracy; depth: RMSE; embedding: distance).
        success: (B,) bool, samples at the worst possible outcome (misclassified; pixel
            accuracy 0; never for depth and embeddings).
        winner: (B,) int64, index of the member whose example is returned, or -1 when no member
            beat the clean image (e.g. misclassified before any attack).
        steps: (B,) int64, gradient steps spent on each sample over all members.
    """

    adversarial: Tensor
    damage: Tensor
    success: Tensor
    winner: Tensor
    steps: Tensor


class Ensemble:
    """Run attacks in order and keep, per sample, the most damaging example.

    A sample that is already broken (``success``: misclassified, pixel accuracy 0) by the clean
    image or by an earlier member is not attacked again. Damage is judged by the first
    member's :meth:`~ssl_robust.attacks.Attack.damage` (one forward without gradients on the
    clean images and one per member on its examples), so every member must attack the same
    model for the same task.

    Args:
        attacks: the members, run in this order; all on the same model and task.

    Raises:
        SSLRobustTypeError: an empty list, a member that is not an Attack or has no damage
            criterion.
        SSLRobustValueError: members of different tasks or models, a targeted PGD.

    Example:
        >>> import torch
        >>> from ssl_robust.attacks import APGD, PGD, Ensemble
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
        >>> images, labels = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
        >>> gen = torch.Generator().manual_seed(0)
        >>> ens = Ensemble([PGD(model, steps=5, generator=gen), APGD(model, generator=gen)])
        >>> res = ens.run(images, labels)
        >>> res.winner.shape, bool((res.adversarial - images).abs().max() <= 8 / 255 + 1e-6)
        (torch.Size([4]), True)
    """

    def __init__(self, attacks: Sequence[Attack]) -> None:
        if isinstance(attacks, Attack) or not isinstance(attacks, (list, tuple)) or not attacks:
            raise _checks.SSLRobustTypeError(
                "Ensemble takes a non-empty list of attacks; got "
                + (type(attacks).__name__ if attacks else "an empty list")
            )
        for a in attacks:
            if not isinstance(a, Attack):
                raise _checks.SSLRobustTypeError(
                    f"every Ensemble member must be an Attack; got {type(a).__name__}"
                )
            if a.task is None:
                raise _checks.SSLRobustTypeError(
                    f"{type(a).__name__} has no per-sample damage criterion (task), so it "
                    "cannot be part of an Ensemble"
                )
            if isinstance(a, PGD) and a.targeted:
                raise _checks.SSLRobustValueError(
                    "PGD(targeted=True) cannot be part of an Ensemble: the ensemble passes the "
                    "true labels; use APGD(loss='dlr', targeted=True), which picks its targets"
                )
        first = attacks[0]
        tasks = sorted({str(a.task) for a in attacks})
        if len(tasks) > 1:
            raise _checks.SSLRobustValueError(
                f"Ensemble members must attack one task; got {', '.join(tasks)} ("
                + ", ".join(f"{type(a).__name__}: {a.task}" for a in attacks)
                + ")"
            )
        if any(a.model is not first.model for a in attacks):
            raise _checks.SSLRobustValueError(
                "Ensemble members must attack the same model object (the worst case per "
                "sample is only meaningful for one model); got members built on different models"
            )
        self.attacks = list(attacks)
        self.task: str = str(first.task)

    def _judge(self, model: Any, images: Tensor, prepared: Any) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            output = model_output(model(images))
            with torch.autocast(images.device.type, enabled=False):
                damage, broken = self.attacks[0].damage(output, prepared)
        damage = damage.detach()
        return (damage.float() if damage.dtype.itemsize < 4 else damage), broken.detach().bool()

    def run(self, images: Tensor, target: Any = None) -> EnsembleResult:
        """Attack ``images`` with every member in turn; returns the :class:`EnsembleResult`.

        Args:
            images: (B, C, H, W) floating-point images in [0, 1]. Not modified.
            target: what the members need (labels, masks, depth, optional clean embeddings).
        """
        _checks.check_image_tensor(images)
        first = self.attacks[0]
        model = _checks.unwrap_distributed(first.model)
        _checks.check_device(model, images)
        b, device = images.shape[0], images.device
        with preserved_state(model, eval_mode=first.eval_mode, device=device):
            with _checks.input_checks(False):
                prepared = first.prepare_target(images, target)
            damage, broken = self._judge(model, images, prepared)
        adversarial = images.detach().clone()
        winner = torch.full((b,), -1, dtype=torch.long, device=device)
        steps = torch.zeros(b, dtype=torch.long, device=device)
        all_idx = torch.arange(b, device=device)
        for k, attack in enumerate(self.attacks):
            todo = all_idx[~broken]
            if todo.numel() == 0:
                break
            norm = attack.norm
            if isinstance(norm, SeededStart) and todo.numel() < b:
                attack.norm = norm.subset(todo)  # type: ignore[assignment]
            try:  # per-sample seeded starts stay with their samples
                res = attack.run(images[todo], _select(target, todo, b))
            finally:
                attack.norm = norm
            steps[todo] += res.steps
            with preserved_state(model, eval_mode=first.eval_mode, device=device):
                new_damage, new_broken = self._judge(
                    model, res.adversarial, _select(prepared, todo, b)
                )
            better = new_damage > damage[todo]
            won = todo[better]
            adversarial[won] = res.adversarial[better]
            damage[won] = new_damage[better]
            broken[won] = new_broken[better]
            winner[won] = k
        return EnsembleResult(adversarial, damage, broken, winner, steps)

    def __call__(self, images: Tensor, target: Any = None) -> Tensor:
        """Attack ``images``; returns the most damaging example per sample."""
        return self.run(images, target).adversarial

    def __repr__(self) -> str:
        members = ",\n  ".join(repr(a) for a in self.attacks)
        return f"Ensemble(task={self.task!r}, [\n  {members}\n])"


def _classification(model: Any, common: dict[str, Any], options: dict[str, Any]) -> list[Attack]:
    opts = {**common, "early_stop": True, **options}  # same result, less work
    return [
        APGD(model, loss="ce", **opts),
        APGD(model, loss="dlr", targeted=True, **opts),
    ]


def _segmentation(model: Any, common: dict[str, Any], options: dict[str, Any]) -> list[Attack]:
    opts = {**common, "early_stop": True, **options}
    losses = ("masked_ce", "js", "masked_spherical", "balanced_ce")
    return [SegPGD(model, loss=name, **opts) for name in losses]  # type: ignore[arg-type]


def _depth(model: Any, common: dict[str, Any], options: dict[str, Any]) -> list[Attack]:
    losses = ("silog_grad", "l1_log")
    return [DepthPGD(model, loss=name, **common, **options) for name in losses]  # type: ignore[arg-type]


def _embedding(model: Any, common: dict[str, Any], options: dict[str, Any]) -> list[Attack]:
    fixed = {**common, "schedule": "fixed", "step_size": common["eps"] / 4}
    return [EmbedAttack(model, **common, **options), EmbedAttack(model, **fixed, **options)]


_PRESETS: dict[str, Callable[[Any, dict[str, Any], dict[str, Any]], list[Attack]]] = {
    "classification": _classification,
    "segmentation": _segmentation,
    "depth": _depth,
    "embedding": _embedding,
}

#: The tasks :func:`strong_attack` has a built-in preset for (registered tasks bring theirs:
#: :attr:`ssl_robust.tasks.TaskSpec.make_strong_attack`).
STRONG_TASKS = tuple(_PRESETS)

Version = Literal["standard", "plus", "rand"]

#: The versions of :func:`strong_attack`: the white-box preset, plus Square, or with EOT.
STRONG_VERSIONS: tuple[str, ...] = ("standard", "plus", "rand")


def _with_square(members: list[Attack], queries: int, generator: Any) -> list[Attack]:
    """The members followed by Square on the first member's objective (its loss, score,
    success and damage: the task's), on the samples the white-box members left unbroken."""
    first = members[0]
    square = Square(
        first.model,
        eps=first.eps,
        norm=first.norm,  # type: ignore[arg-type]
        queries=queries,
        generator=generator,
        objective=first,
        eval_mode=first.eval_mode,
    )
    return [*members, square]


def _registered(model: Any, task: str, options: dict[str, Any]) -> Ensemble:
    """The strong attack of a registered task, through its TaskSpec (looked up late: the
    tasks module builds on the attacks)."""
    from ..tasks import get_task, list_tasks

    if not isinstance(task, str) or task not in list_tasks():
        valid = [*STRONG_TASKS, *(t for t in list_tasks() if t not in STRONG_TASKS)]
        _checks.check_choice("task", task, valid)
    spec = get_task(task)
    info = options.pop("info", None)
    if info is None:
        head = getattr(_checks.inner_module(model), "adaptor", None)
        info = spec.head_info(head if head is not None else model)
    attack: Ensemble = spec.make_strong_attack(model, info, **options)
    return attack


def strong_attack(
    model: nn.Module | Callable[[Tensor], Any],
    *,
    task: str,
    eps: float = 8 / 255,
    norm: Literal["linf", "l2"] = "linf",
    steps: int = 100,
    generator: torch.Generator | None = None,
    version: Version = "standard",
    square_queries: int = 5000,
    **options: Any,
) -> Ensemble:
    """A reliable worst-case evaluation per task: an :class:`Ensemble` of APGD attacks.

    - ``"classification"`` (AutoAttack-style): APGD-CE, then APGD-T (targeted DLR over the 9
      classes with the highest clean logits) on the samples still correctly classified.
    - ``"segmentation"`` (SEA-style): SegPGD on the APGD schedule with each of SEA's losses
      (masked CE, JS divergence, masked spherical, balanced CE); worst pixel accuracy per image.
    - ``"depth"``: DepthPGD on the APGD schedule with the paper's loss and with L1 on log-depth;
      worst RMSE per image.
    - ``"embedding"``: EmbedAttack with the APGD schedule and with the paper's fixed step
      (eps/4); largest distance per sample.

    Every member runs ``steps`` steps from a random start; the classification and
    segmentation members stop early on samples they broke (``early_stop=True``: the same result
    under ``select="best"``, less work). AutoAttack's FAB-T is not included.

    ``version`` (as AutoAttack's):

    - ``"standard"``: the white-box members above.
    - ``"plus"``: then :class:`~ssl_robust.attacks.Square` (score-based, no gradients;
      ``square_queries`` per sample, AutoAttack's 5000 by default) on the samples still
      unbroken, maximizing the first member's objective (classification: the logit margin
      first, as AutoAttack's Square), so gradient masking cannot hide a weakness.
    - ``"rand"``: for randomized models, every member averages its gradient and loss over
      ``eot_iter`` forwards (20 by default, as AutoAttack's ``version="rand"``; pass
      ``eot_iter=`` to change it).

    Args:
        model: the model under attack (logits, segmentation logits, depth, or an encoder).
        task: one of ``"classification"``, ``"segmentation"``, ``"depth"``, ``"embedding"``,
            or a registered task (:func:`ssl_robust.tasks.register_task`), whose
            :attr:`~ssl_robust.tasks.TaskSpec.make_strong_attack` builds the ensemble (an
            ``info=`` option gives it the dataset facts; default: the model's head's).
        eps: radius of the threat model on the [0, 1] scale.
        norm: ``"linf"`` or ``"l2"``.
        steps: steps per member (and per target class for APGD-T).
        generator: random source of the starts.
        version: ``"standard"``, ``"plus"`` (with Square) or ``"rand"`` (EOT).
        square_queries: Square's queries per sample (``version="plus"``).
        **options: further options for every member (e.g. ``ignore_index``, ``max_depth``,
            ``tokens``, ``restarts``).

    Raises:
        SSLRobustValueError: unknown task or version (with the valid ones).

    Example:
        >>> import torch
        >>> from ssl_robust.attacks import strong_attack
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
        >>> images, labels = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
        >>> attack = strong_attack(model, task="classification", steps=5)
        >>> attack.run(images, labels).success.shape
        torch.Size([4])
        >>> plus = strong_attack(model, task="classification", steps=5, version="plus",
        ...                      square_queries=20)
        >>> [type(a).__name__ for a in plus.attacks]
        ['APGD', 'APGD', 'Square']
    """
    version = _checks.check_choice("version", version, STRONG_VERSIONS)  # type: ignore[assignment]
    queries = _checks.check_int("square_queries", square_queries, minimum=1)
    if task not in STRONG_TASKS:  # a registered task: its preset, then the version on top
        more = {"eps": eps, "norm": norm, "steps": steps, "generator": generator, **options}
        members = list(_registered(model, task, more).attacks)
        if version == "rand":
            eot = check_eot_iter(options.get("eot_iter", 20))
            for member in members:
                member.eot_iter = eot
    else:
        common: dict[str, Any] = {"eps": eps, "norm": norm, "steps": steps}
        common.update(generator=generator, schedule="apgd")
        if version == "rand":
            options = {"eot_iter": 20, **options}
        members = _PRESETS[task](model, common, options)
    if version == "plus":
        members = _with_square(members, queries, generator)
    return Ensemble(members)
