"""Threat models of the PGD core: :class:`Norm` objects with three hooks (as in foolbox).

``random_init`` draws a start in the eps-ball, ``step`` moves along the steepest-ascent
direction of the norm, ``project`` returns to the ball. :class:`Linf` and :class:`L2` are the
registered ones (``NORMS``); :class:`SeededStart` wraps either to draw each sample's start from
its own seed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal

import torch
from torch import Tensor

__all__ = ["L2", "NORMS", "Linf", "Norm", "SeededStart"]


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
    def step(self, delta: Tensor, grad: Tensor, step_size: float | Tensor) -> Tensor:
        """Move ``delta`` by ``step_size`` in the steepest-ascent direction of ``grad``.

        ``step_size`` is a float, or a (B, 1, ..., 1) tensor of per-sample steps (APGD).
        """

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

    def step(self, delta: Tensor, grad: Tensor, step_size: float | Tensor) -> Tensor:
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

    def step(self, delta: Tensor, grad: Tensor, step_size: float | Tensor) -> Tensor:
        return delta + step_size * grad / _per_sample_norm(grad).clamp_min(1e-12)

    def project(self, delta: Tensor, eps: float) -> Tensor:
        factor = (eps / _per_sample_norm(delta).clamp_min(1e-12)).clamp(max=1.0)
        return delta * factor


class SeededStart(Norm):
    """A threat model whose random start is drawn per sample from its own seed.

    Wraps a :class:`~ssl_robust.attacks.Norm` (same ``step``/``project``); ``random_init``
    draws sample ``i``'s start with ``torch.Generator().manual_seed(seeds[i])``, so a sample
    gets the same start whatever batch (or rank) it falls in. With ``restarts > 1`` the later
    restarts run on the samples still unbroken, which this object cannot identify: their starts
    are seeded from the whole batch (deterministic, but they depend on the batch composition).

    Example:
        >>> import torch
        >>> from ssl_robust.attacks import Linf, SeededStart
        >>> like = torch.zeros(3, 1, 2, 2)
        >>> a = SeededStart(Linf(), [7, 8, 9]).random_init(like, 0.1, None)
        >>> b = SeededStart(Linf(), [8]).random_init(like[:1], 0.1, None)
        >>> torch.equal(a[1:2], b)
        True
    """

    def __init__(self, base: Norm, seeds: list[int]) -> None:
        self.base = base
        self.name = base.name
        self.seeds = list(seeds)
        self.calls = 0

    def random_init(self, like: Tensor, eps: float, generator: torch.Generator | None) -> Tensor:
        self.calls += 1
        salt = 0 if self.calls == 1 else self.calls * 0x9E3779B97F4A7C15
        if like.shape[0] != len(self.seeds):
            # A restart on the samples left (restarts > 1): which ones is not known here, so
            # this start depends on the batch's composition (still seeded, deterministic).
            mixed = hash((tuple(self.seeds), self.calls, like.shape[0])) & ((1 << 63) - 1)
            return self.base.random_init(like, eps, torch.Generator().manual_seed(mixed))
        parts = [
            self.base.random_init(
                like[i : i + 1], eps, torch.Generator().manual_seed((s ^ salt) & ((1 << 63) - 1))
            )
            for i, s in enumerate(self.seeds)
        ]
        return torch.cat(parts) if parts else torch.zeros_like(like)

    def subset(self, idx: Tensor | list[int]) -> SeededStart:
        """The same threat model for the samples ``idx`` of the batch, with their seeds.

        :class:`~ssl_robust.attacks.Ensemble` runs its later members on the samples still
        unbroken; with this their starts stay the ones of their own seeds.
        """
        rows = idx.tolist() if isinstance(idx, Tensor) else list(idx)
        return SeededStart(self.base, [self.seeds[int(i)] for i in rows])

    def step(self, delta: Tensor, grad: Tensor, step_size: float | Tensor) -> Tensor:
        return self.base.step(delta, grad, step_size)

    def project(self, delta: Tensor, eps: float) -> Tensor:
        return self.base.project(delta, eps)


#: The registered threat models, by the name attacks accept in ``norm=``.
NORMS: dict[str, Norm] = {"linf": Linf(), "l2": L2()}
