"""Robust fine-tuning objectives: the Objective base, DeACL and FARE (TaskAT: ``task_at``).

An objective owns its attacks' settings and its losses only; the loop
(:class:`~ssl_robust.defenses.RobustTrainer`) owns the step: it runs the frozen teacher once,
asks each objective for the adversarial images of each of its perturbations (one attack run
each), runs the student once over the clean and all adversarial images, and hands every
objective its slices of that pass. Each objective returns :class:`Terms`: an optional anchor
(a scalar always added) and one per-sample loss per perturbation, with its clean counterpart
when the ``max`` combination needs it.

Example:
    >>> from ssl_robust.defenses import FARE
    >>> FARE(tokens="patch").config()["tokens"]
    'patch'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _checks
from ..attacks.embed import EmbedAttack, embedding_distance
from ..encoders.base import EncoderOutput

__all__ = [
    "FARE",
    "DeACL",
    "Features",
    "Objective",
    "StepInputs",
    "Terms",
    "deacl_loss",
    "embedding_part",
    "fare_distance",
]

Embedding = Tensor | EncoderOutput


def embedding_part(emb: Embedding, part: str, *, who: str = "DeACL") -> Tensor:
    """The CLS (``part="cls"``) or patch tokens (``"patch"``) of an encoder output.

    A bare (B, D) tensor counts as the CLS embedding; anything else is refused with a message
    naming ``who`` needs it.
    """
    if isinstance(emb, EncoderOutput):
        return emb.cls if part == "cls" else emb.patches
    if part == "cls" and isinstance(emb, Tensor) and emb.ndim == 2:
        return emb
    raise _checks.SSLRobustTypeError(
        f"{who} needs encoders returning an EncoderOutput (or a (B, D) tensor with "
        f"tokens='cls'); got {type(emb).__name__}"
        + (f" of shape {tuple(emb.shape)}" if isinstance(emb, Tensor) else "")
    )


def _parts(tokens: str) -> tuple[str, ...]:
    return {"cls": ("cls",), "patch": ("patch",)}.get(tokens, ("cls", "patch"))


def fare_distance(student: Embedding, teacher: Embedding, *, tokens: str = "cls") -> Tensor:
    r"""FARE's per-sample squared L2 distance (Schlarmann et al., ICML 2024).

    .. math::
        d = \lVert s_{cls} - t_{cls} \rVert_2^2 \;[+\; \tfrac1N \textstyle\sum_n
        \lVert s_n - t_n \rVert_2^2]

    on the CLS token, the patch tokens (squared distance averaged over the N tokens, so the
    two parts share one scale) or both (``"cls+patch"``: the sum). Computed in float32 at least.

    Returns:
        (B,) distances.

    Example:
        >>> import torch
        >>> s, t = torch.zeros(2, 4), torch.ones(2, 4)
        >>> fare_distance(s, t).tolist()
        [4.0, 4.0]
    """
    total: Tensor | None = None
    for part in _parts(tokens):
        s = embedding_part(student, part, who=f"FARE(tokens={tokens!r})")
        t = embedding_part(teacher, part, who=f"FARE(tokens={tokens!r})")
        s = s.float() if s.dtype.itemsize < 4 else s
        d = (s - t.to(s.dtype)).pow(2).sum(-1)
        d = d if d.ndim == 1 else d.mean(1)
        total = d if total is None else total + d
    assert total is not None
    return total


@dataclass
class Features:
    """The student's output for one group of images: the encoder output, and the last block's
    tokens without the final norm (``raw``) when a head reads those (the depth protocol)."""

    out: Any
    raw: Any = None


@dataclass
class StepInputs:
    """What every objective sees of a step: the (augmented) images, the frozen teacher's
    output on them and the batch's targets by key (``label``, ``mask``, ``depth``)."""

    images: Tensor
    teacher: Any
    targets: Mapping[str, Tensor] = field(default_factory=dict)


@dataclass
class Terms:
    """An objective's losses on one step.

    Attributes:
        adversarial: per perturbation index, the per-sample (B,) loss on its adversarial images
            (weighted).
        clean: per perturbation index, the same loss with the clean images in place of the
            adversarial ones (filled only when asked, for ``combine="max"``).
        anchor: a scalar always added (DeACL's clean term), or None.
        total: the objective's own scalar when all its perturbations are active (its anchor
            plus the mean of its adversarial losses, in its original formula).
        stats: detached scalars to report.
    """

    adversarial: dict[int, Tensor]
    clean: dict[int, Tensor] = field(default_factory=dict)
    anchor: Tensor | None = None
    total: Tensor | None = None
    stats: dict[str, Tensor] = field(default_factory=dict)


class Objective:
    """Base of the robust objectives: settings, attacks on the student, losses.

    Subclasses define :meth:`bind`, :meth:`perturbations`, :meth:`attack` and :meth:`terms`.
    """

    #: Name used in configs, checkpoints and error messages.
    name: ClassVar[str] = "objective"
    #: True for objectives that keep clean quality (DeACL, FARE): TaskAT needs one of them.
    anchor: ClassVar[bool] = False

    def bind(self, student: nn.Module, generator: torch.Generator) -> None:
        """Build the attacks on ``student`` drawing from ``generator`` (called by the trainer)."""
        raise NotImplementedError

    def perturbations(self) -> list[str]:
        """Labels of this objective's perturbations, one attack each."""
        raise NotImplementedError

    def target_keys(self) -> dict[str, str]:
        """Batch keys this objective needs, as ``{key: who needs it}``."""
        return {}

    @property
    def needs_raw(self) -> bool:
        """Whether a head reads the last block's tokens without the final norm."""
        return False

    @property
    def tokens(self) -> str:
        """Tokens of the student's output the objective reads (``cls``, ``patch``, both)."""
        return "cls"

    def check_output(self, output: Any) -> None:
        """Refuse an encoder output this objective cannot use (called once, on a probe)."""
        for part in _parts(self.tokens):
            embedding_part(output, part, who=f"{type(self).__name__}(tokens={self.tokens!r})")

    def attack(self, index: int, inputs: StepInputs) -> Tensor:
        """The adversarial images of perturbation ``index`` (the attack runs once)."""
        raise NotImplementedError

    def terms(
        self,
        inputs: StepInputs,
        clean: Features,
        adversarial: Mapping[int, Features],
        *,
        with_clean: bool,
    ) -> Terms:
        """The losses, from the student's features on the clean and adversarial images."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """The settings as plain values (what checkpoints store and compare)."""
        raise NotImplementedError


def _cos_rows(a: Tensor, b: Tensor) -> Tensor:
    cos = F.cosine_similarity(a.float(), b.float(), dim=-1, eps=1e-8)
    return cos if cos.ndim == 1 else cos.mean(1)


def _cos(a: Tensor, b: Tensor) -> Tensor:
    return F.cosine_similarity(a.float(), b.float(), dim=-1, eps=1e-8).mean()


def deacl_loss(
    student_clean: Embedding,
    student_adv: Embedding,
    teacher_clean: Embedding,
    *,
    gamma: float = 2.0,
    tokens: str = "cls",
) -> tuple[Tensor, dict[str, Tensor]]:
    r"""The DeACL objective from the three embeddings (paper Eq. 2, d = cosine similarity).

    .. math::
        L = -\cos(f_R(x), f(x)) - \gamma \cos(f_R(x_{adv}), f_R(x))

    averaged over the batch, on the CLS embedding; ``tokens="cls+patch"`` adds the same two
    terms on the patch tokens (cosine per token, averaged over tokens and batch). Computed in
    float32 at least. Gradients flow into both student embeddings.

    Args:
        student_clean: f_R(x), an EncoderOutput or a (B, D) CLS tensor.
        student_adv: f_R(x_adv), same kind.
        teacher_clean: f(x), same kind.
        gamma: weight of the robustness term.
        tokens: ``"cls"`` or ``"cls+patch"``.

    Returns:
        ``(loss, terms)``: the scalar loss and the (detached) mean cosines ``clean_cos``,
        ``adv_cos`` (and ``patch_clean_cos``, ``patch_adv_cos`` for ``"cls+patch"``).

    Example:
        >>> import torch
        >>> s, t = torch.randn(4, 8), torch.randn(4, 8)
        >>> loss, terms = deacl_loss(s, s, t, gamma=2.0)
        >>> round(float(loss + terms["clean_cos"] + 2.0), 5)
        0.0
    """
    parts = ("cls",) if tokens == "cls" else ("cls", "patch")
    loss = torch.zeros((), device=embedding_part(student_clean, "cls").device)
    terms: dict[str, Tensor] = {}
    for part in parts:
        s, a, t = (embedding_part(e, part) for e in (student_clean, student_adv, teacher_clean))
        if t.shape != s.shape or a.shape != s.shape:
            raise _checks.SSLRobustValueError(
                f"teacher and student embeddings must have the same shape; got teacher "
                f"{tuple(t.shape)}, student {tuple(s.shape)} ({part} tokens) — the teacher "
                "must be the pretrained version of the student (same embedding size)"
            )
        clean, adv = _cos(s, t), _cos(a, s)
        loss = loss - clean - gamma * adv
        prefix = "" if part == "cls" else "patch_"
        terms[prefix + "clean_cos"] = clean.detach()
        terms[prefix + "adv_cos"] = adv.detach()
    return loss, terms


class _ClsPatchEmbedAttack(EmbedAttack):
    """EmbedAttack on the CLS and the patch tokens together: d(cls) + d(patches)."""

    def embed(self, output: Any) -> Tensor:
        cls = embedding_part(output, "cls")
        return torch.cat((cls.unsqueeze(1), embedding_part(output, "patch")), 1)

    def loss(self, output: Any, target: Tensor, step: int) -> Tensor:
        emb = self.embed(output)
        d: Literal["l2", "cosine"] = "l2" if self.distance == "l2" else "cosine"
        cls = embedding_distance(emb[:, 0], target[:, 0], d)
        return cls + embedding_distance(emb[:, 1:], target[:, 1:], d)


class _EmbeddingObjective(Objective):
    """The settings DeACL and FARE share: tokens, an L∞ embedding attack (eps, step_size,
    steps) built by :meth:`bind`, a weight, and :meth:`config` from :attr:`_CONFIG`."""

    anchor: ClassVar[bool] = True
    #: The settings :meth:`config` stores, in order (``name`` first).
    _CONFIG: ClassVar[tuple[str, ...]] = ("tokens", "eps", "step_size", "steps", "weight")

    def _settings(
        self,
        tokens: str,
        choices: tuple[str, ...],
        *,
        eps: float,
        step_size: float,
        steps: int,
        weight: float,
    ) -> None:
        self._tokens = _checks.check_choice("tokens", tokens, choices)
        self.eps = _checks.check_budget("eps", eps, norm="linf")
        self.step_size = _checks.check_budget("step_size", step_size, norm="linf")
        self.steps = _checks.check_int("steps", steps, minimum=0)
        self.weight = _checks.check_positive_float("weight", weight)
        self.embed_attack: EmbedAttack | None = None

    @property
    def tokens(self) -> str:
        return self._tokens

    def _bind(self, cls: type[EmbedAttack], student: nn.Module, generator: torch.Generator,
              **options: Any) -> None:  # fmt: skip
        self.embed_attack = cls(
            student, eps=self.eps, step_size=self.step_size, steps=self.steps, select="last",
            generator=generator, **options,
        )  # fmt: skip

    def _attack(self, images: Tensor, target: Any) -> Tensor:
        if self.embed_attack is None:
            raise _checks.SSLRobustRuntimeError(
                f"{type(self).__name__}.attack before bind(): the trainer binds its objectives"
            )
        return self.embed_attack(images, target)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, **{key: getattr(self, key) for key in self._CONFIG}}


class DeACL(_EmbeddingObjective):
    r"""DeACL (Zhang et al. 2022; paper §3.3): cosine distillation plus cosine robustness.

    .. math::
        L = -\cos(f_R(x), f(x)) - \gamma \cos(f_R(x_{adv}), f_R(x))

    The first term is the anchor (always applied); the second is the perturbation, whose
    attack (EmbedAttack, last iterate) pushes the student's embedding away from the
    teacher's (or the student's own) clean embedding. ``tokens="cls+patch"`` adds both terms
    on the patch tokens (cosine per token, averaged).

    Args:
        gamma: weight of the robustness term, >= 0.
        tokens: ``"cls"`` or ``"cls+patch"``.
        eps, step_size, steps: the L∞ attack on the [0, 1] image scale.
        distance: what the attack maximizes, ``"cosine"`` or ``"l2"``.
        attack_target: whose clean embedding the attack moves away from, ``"teacher"`` or
            ``"student"``.
        weight: factor on every term (for combinations with other objectives).

    Example:
        >>> from ssl_robust.defenses import DeACL
        >>> DeACL(tokens="cls+patch").perturbations()
        ['deacl']
    """

    name: ClassVar[str] = "deacl"
    _CONFIG: ClassVar[tuple[str, ...]] = (
        "gamma", "tokens", "eps", "step_size", "steps", "distance", "attack_target", "weight",
    )  # fmt: skip

    def __init__(
        self,
        *,
        gamma: float = 2.0,
        tokens: Literal["cls", "cls+patch"] = "cls",
        eps: float = 4 / 255,
        step_size: float = 1 / 255,
        steps: int = 5,
        distance: Literal["cosine", "l2"] = "cosine",
        attack_target: Literal["teacher", "student"] = "teacher",
        weight: float = 1.0,
    ) -> None:
        self.gamma = _checks.check_positive_float("gamma", gamma, allow_zero=True)
        self._settings(
            tokens, ("cls", "cls+patch"), eps=eps, step_size=step_size, steps=steps, weight=weight
        )
        self.distance = _checks.check_choice("distance", distance, ("cosine", "l2"))
        self.attack_target = _checks.check_choice(
            "attack_target", attack_target, ("teacher", "student")
        )

    def bind(self, student: nn.Module, generator: torch.Generator) -> None:
        cls = EmbedAttack if self._tokens == "cls" else _ClsPatchEmbedAttack
        tokens = "cls" if self._tokens == "cls" else "patch"
        self._bind(cls, student, generator, tokens=tokens, distance=self.distance)

    def perturbations(self) -> list[str]:
        return ["deacl"]

    def attack(self, index: int, inputs: StepInputs) -> Tensor:
        target: Any = None
        if self.attack_target == "teacher":
            teacher = inputs.teacher
            target = teacher if self._tokens == "cls+patch" else embedding_part(teacher, "cls")
        return self._attack(inputs.images, target)

    def terms(
        self,
        inputs: StepInputs,
        clean: Features,
        adversarial: Mapping[int, Features],
        *,
        with_clean: bool,
    ) -> Terms:
        s, t = clean.out, inputs.teacher
        result = Terms(adversarial={})
        anchor = torch.zeros((), device=embedding_part(s, "cls").device)
        adv_rows = None
        for part in _parts(self._tokens):
            sp, tp = embedding_part(s, part), embedding_part(t, part)
            anchor = anchor - _cos_rows(sp, tp).mean()
            if 0 in adversarial:
                a = embedding_part(adversarial[0].out, part)
                rows = -self.gamma * _cos_rows(a, sp)
                adv_rows = rows if adv_rows is None else adv_rows + rows
        result.anchor = self.weight * anchor
        if adv_rows is not None:
            result.adversarial[0] = self.weight * adv_rows
            if with_clean:  # cos(f_R(x), f_R(x)) = 1 per token
                parts = len(_parts(self._tokens))
                result.clean[0] = torch.full_like(adv_rows, -self.gamma * parts * self.weight)
            loss, stats = deacl_loss(
                s, adversarial[0].out, t, gamma=self.gamma, tokens=self._tokens
            )
            result.total = loss if self.weight == 1.0 else self.weight * loss
            result.stats = stats
        return result


class _FAREAttack(EmbedAttack):
    """Maximizes FARE's own distance to the teacher's clean embedding."""

    def __init__(self, encoder: nn.Module, *, fare_tokens: str, **kwargs: Any) -> None:
        super().__init__(encoder, tokens="cls" if fare_tokens == "cls" else "patch", **kwargs)
        self.fare_tokens = fare_tokens

    def embed(self, output: Any) -> Tensor:
        parts = [embedding_part(output, p, who=f"FARE(tokens={self.fare_tokens!r})")
                 for p in _parts(self.fare_tokens)]  # fmt: skip
        if len(parts) == 1:
            return parts[0]
        return torch.cat((parts[0].unsqueeze(1), parts[1]), 1)

    def loss(self, output: Any, target: Tensor, step: int) -> Tensor:
        emb = self.embed(output)
        emb = emb.float() if emb.dtype.itemsize < 4 else emb
        d = (emb - target.to(emb.dtype)).pow(2).sum(-1)
        if d.ndim == 1:
            return d
        if self.fare_tokens == "patch":
            return d.mean(1)
        return d[:, 0] + d[:, 1:].mean(1)


class FARE(_EmbeddingObjective):
    r"""FARE (Schlarmann et al., ICML 2024, "Robust CLIP"): unsupervised adversarial
    fine-tuning towards the frozen teacher's clean embedding.

    .. math::
        L = \lVert f_R(x_{adv}) - f(x) \rVert_2^2, \qquad
        x_{adv} = \arg\max_{\lVert \delta \rVert_\infty \le \epsilon}
        \lVert f_R(x + \delta) - f(x) \rVert_2^2

    per sample (:func:`fare_distance`), on the CLS token, the patch tokens or both. The patch
    version is for dense tasks: linear segmentation and depth heads read the patch tokens and
    are sensitive to their size, which a cosine ignores. Preset: 10 steps of 1/255, eps 4/255.
    FARE is an anchor: with ``x_adv = x`` it is plain distillation, so it can carry
    :class:`TaskAT`.

    Args:
        tokens: ``"cls"``, ``"patch"`` or ``"cls+patch"``.
        eps, step_size, steps: the L∞ attack on the [0, 1] image scale.
        weight: factor on the loss.

    Example:
        >>> from ssl_robust.defenses import FARE
        >>> f = FARE(tokens="cls+patch")
        >>> round(f.eps * 255, 3), f.steps, f.perturbations()
        (4.0, 10, ['fare'])
    """

    name: ClassVar[str] = "fare"

    def __init__(
        self,
        *,
        tokens: Literal["cls", "patch", "cls+patch"] = "cls",
        eps: float = 4 / 255,
        step_size: float = 1 / 255,
        steps: int = 10,
        weight: float = 1.0,
    ) -> None:
        self._settings(
            tokens, ("cls", "patch", "cls+patch"), eps=eps, step_size=step_size, steps=steps,
            weight=weight,
        )  # fmt: skip

    def bind(self, student: nn.Module, generator: torch.Generator) -> None:
        self._bind(_FAREAttack, student, generator, fare_tokens=self._tokens, distance="l2")

    def perturbations(self) -> list[str]:
        return ["fare"]

    def attack(self, index: int, inputs: StepInputs) -> Tensor:
        return self._attack(inputs.images, inputs.teacher)

    def terms(
        self,
        inputs: StepInputs,
        clean: Features,
        adversarial: Mapping[int, Features],
        *,
        with_clean: bool,
    ) -> Terms:
        result = Terms(adversarial={})
        if 0 in adversarial:
            adv = self.weight * fare_distance(
                adversarial[0].out, inputs.teacher, tokens=self._tokens
            )
            result.adversarial[0] = adv
            result.total = adv.mean()
            result.stats["fare"] = adv.detach().mean()
        if with_clean or not adversarial:
            cl = self.weight * fare_distance(clean.out, inputs.teacher, tokens=self._tokens)
            result.clean[0] = cl
            result.stats["fare_clean"] = cl.detach().mean()
        return result
