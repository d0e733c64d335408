"""DeACLConfig and RobustConfig: the validated hyperparameters of robust fine-tuning."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from .. import _checks

__all__ = ["DeACLConfig", "RobustConfig"]


def _differences(mine: dict[str, Any], other: dict[str, Any]) -> list[str]:
    keys = sorted(set(mine) | set(other))
    return [
        f"{k}: stored {other.get(k, '<missing>')!r}, now {mine.get(k, '<missing>')!r}"
        for k in keys
        if mine.get(k, "<missing>") != other.get(k, "<missing>")
    ]


def _check_loop_fields(cfg: Any) -> dict[str, float]:
    """Checks shared by both configs; returns the float fields to store as floats."""
    c = _checks
    floats = {
        "lr": c.check_positive_float("lr", cfg.lr),
        "momentum": c.check_positive_float("momentum", cfg.momentum, allow_zero=True),
        "weight_decay": c.check_positive_float("weight_decay", cfg.weight_decay, allow_zero=True),
    }
    c.check_int("epochs", cfg.epochs, minimum=1)
    c.check_int("warmup_epochs", cfg.warmup_epochs, minimum=0)
    c.check_int("seed", cfg.seed, minimum=0)
    if cfg.warmup_epochs > cfg.epochs:
        raise c.SSLRobustValueError(
            f"warmup_epochs must be <= epochs; got warmup_epochs={cfg.warmup_epochs} and "
            f"epochs={cfg.epochs}"
        )
    if cfg.amp is not None:
        c.check_choice("amp", cfg.amp, ("bf16",))
    if not isinstance(cfg.augment, bool):
        raise c.SSLRobustTypeError(
            f"augment must be a bool; got {type(cfg.augment).__name__} {cfg.augment!r}"
        )
    return floats


@dataclass(frozen=True)
class _LoopFields:
    """The loop's fields and the dict view both configs share (see :class:`RobustConfig`)."""

    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    epochs: int = 100
    warmup_epochs: int = 10
    seed: int = 0
    augment: bool = True
    amp: Literal["bf16"] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (what checkpoints store and compare)."""
        return dataclasses.asdict(self)

    def differences(self, other: dict[str, Any]) -> list[str]:
        """Fields where a stored config dict ``other`` differs from this one, as text."""
        return _differences(self.to_dict(), other)


@dataclass(frozen=True)
class RobustConfig(_LoopFields):
    r"""The loop's hyperparameters of :class:`~ssl_robust.defenses.RobustTrainer` (the
    objectives carry their own attack settings).

    The defaults follow DeACL's preset: SGD (momentum 0.9, lr 0.05, no weight decay), 100 epochs
    with 10 linear warm-up epochs and a cosine decay, random resized crops and flips.

    Args:
        lr: base learning rate of the default SGD optimizer (the student).
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        epochs: length of the learning-rate schedule (and default length of ``fit``).
        warmup_epochs: linear warm-up epochs (<= ``epochs``).
        seed: seed of the trainer's generator (augmentation, attack starts, ``random``).
        augment: random resized crops and flips in ``training_step`` (masks and depth maps
            of dict batches move with the images).
        amp: ``None`` (full precision) or ``"bf16"`` (autocast to bfloat16).

    Example:
        >>> from ssl_robust.defenses import RobustConfig
        >>> RobustConfig(epochs=4, warmup_epochs=1).lr
        0.05
    """

    def __post_init__(self) -> None:
        for name, value in _check_loop_fields(self).items():
            object.__setattr__(self, name, value)


@dataclass(frozen=True)
class DeACLConfig(_LoopFields):
    r"""Hyperparameters of DeACL fine-tuning (paper §3.3 and Appendix C.2; Zhang et al. 2022).

    The defaults are the paper's preset: SGD (momentum 0.9, lr 0.05, no weight decay), 100
    epochs with 10 linear warm-up epochs and a cosine decay, eps = 4/255, γ = 2, random
    resized crops and horizontal/vertical flips. Every field is checked on construction;
    a bad value raises :class:`~ssl_robust.SSLRobustValueError` /
    :class:`~ssl_robust.SSLRobustTypeError` saying what was expected.

    Args:
        eps: L∞ budget of the training attack on the [0, 1] image scale (4/255, not 4).
        step_size: attack step on the [0, 1] scale.
        steps: attack steps per batch.
        gamma: weight γ of the robustness term, >= 0.
        distance: what the attack maximizes between embeddings, ``"cosine"`` (1 − cos, as in
            DeACL) or ``"l2"`` (squared Euclidean). The training loss always uses cosine
            similarity.
        attack_target: whose clean embedding the attack pushes away from: ``"teacher"`` (the
            original code) or ``"student"``.
        tokens: ``"cls"`` (the paper) or ``"cls+patch"`` (adds the same two terms on the patch
            tokens, and attacks both, for dense robustness).
        lr: base learning rate of the default SGD optimizer.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        epochs: length of the learning-rate schedule (and default length of ``fit``).
        warmup_epochs: linear warm-up epochs at the start of the schedule (<= ``epochs``).
        seed: seed of the trainer's own generator (augmentation and attack start).
        augment: apply random resized crops and flips (on tensors) in ``training_step``.
        amp: ``None`` (full precision) or ``"bf16"`` (autocast to bfloat16).

    Example:
        >>> from ssl_robust.defenses import DeACLConfig
        >>> cfg = DeACLConfig(epochs=20, warmup_epochs=2)
        >>> round(cfg.eps * 255, 3), cfg.gamma, cfg.tokens
        (4.0, 2.0, 'cls')
    """

    eps: float = 4 / 255
    step_size: float = 1 / 255
    steps: int = 5
    gamma: float = 2.0
    distance: Literal["cosine", "l2"] = "cosine"
    attack_target: Literal["teacher", "student"] = "teacher"
    tokens: Literal["cls", "cls+patch"] = "cls"

    def __post_init__(self) -> None:
        c = _checks
        floats = {
            "eps": c.check_budget("eps", self.eps, norm="linf"),
            "step_size": c.check_budget("step_size", self.step_size, norm="linf"),
            "gamma": c.check_positive_float("gamma", self.gamma, allow_zero=True),
        }
        c.check_int("steps", self.steps, minimum=0)
        floats.update(_check_loop_fields(self))
        c.check_choice("distance", self.distance, ("cosine", "l2"))
        c.check_choice("attack_target", self.attack_target, ("teacher", "student"))
        c.check_choice("tokens", self.tokens, ("cls", "cls+patch"))
        for name, value in floats.items():  # store ints given for floats as floats
            object.__setattr__(self, name, value)

    def loop_config(self) -> RobustConfig:
        """The loop's part of this config (optimizer, schedule, seed, augmentation, amp)."""
        names = {f.name for f in dataclasses.fields(RobustConfig)}
        return RobustConfig(**{k: v for k, v in self.to_dict().items() if k in names})
