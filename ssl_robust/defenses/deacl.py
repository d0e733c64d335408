"""DeACL robust fine-tuning (paper §3.3; Zhang et al. 2022): the loss and the trainer."""

from __future__ import annotations

import contextlib
import copy
import functools
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _checks
from ..attacks.embed import EmbedAttack, embedding_distance
from ..data.batches import unpack_batch
from ..encoders.base import EncoderOutput
from ..runtime import atomic_save
from . import _loop
from .augment import random_resized_crop_flip
from .config import DeACLConfig

__all__ = ["DeACLTrainer", "deacl_loss", "warmup_cosine"]

#: Tag stored in trainer state dicts and checkpoints.
STATE_FORMAT = "ssl_robust.deacl/1"

Embedding = Tensor | EncoderOutput
EpochCallback = Callable[[int, nn.Module], Any]


def _cos(a: Tensor, b: Tensor) -> Tensor:
    return F.cosine_similarity(a.float(), b.float(), dim=-1, eps=1e-8).mean()


def _part(emb: Embedding, part: str) -> Tensor:
    if isinstance(emb, EncoderOutput):
        return emb.cls if part == "cls" else emb.patches
    if part == "cls" and isinstance(emb, Tensor) and emb.ndim == 2:
        return emb
    raise _checks.SSLRobustTypeError(
        "DeACL needs encoders returning an EncoderOutput (or a (B, D) tensor with "
        f"tokens='cls'); got {type(emb).__name__}"
        + (f" of shape {tuple(emb.shape)}" if isinstance(emb, Tensor) else "")
    )


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
    loss = torch.zeros((), device=_part(student_clean, "cls").device)
    terms: dict[str, Tensor] = {}
    for part in parts:
        s, a, t = (_part(e, part) for e in (student_clean, student_adv, teacher_clean))
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


def warmup_cosine(epoch: int, *, epochs: int, warmup_epochs: int) -> float:
    """Learning-rate factor of epoch ``epoch`` (0-based): linear warm-up, then cosine decay.

    ``(epoch + 1) / warmup_epochs`` during warm-up, then ``½(1 + cos(π·p))`` with ``p`` the
    progress through the remaining ``epochs - warmup_epochs`` epochs.

    Example:
        >>> [round(warmup_cosine(e, epochs=4, warmup_epochs=2), 3) for e in range(4)]
        [0.5, 1.0, 1.0, 0.5]
    """
    if epoch < warmup_epochs:
        return (epoch + 1) / warmup_epochs
    progress = (epoch - warmup_epochs) / max(1, epochs - warmup_epochs)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


class _ClsPatchEmbedAttack(EmbedAttack):
    """EmbedAttack on the CLS and the patch tokens together: d(cls) + d(patches)."""

    def embed(self, output: Any) -> Tensor:
        return torch.cat((_part(output, "cls").unsqueeze(1), _part(output, "patch")), 1)

    def loss(self, output: Any, target: Tensor, step: int) -> Tensor:
        emb = self.embed(output)
        d: Literal["l2", "cosine"] = "l2" if self.distance == "l2" else "cosine"
        cls = embedding_distance(emb[:, 0], target[:, 0], d)
        return cls + embedding_distance(emb[:, 1:], target[:, 1:], d)


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


class DeACLTrainer:
    r"""DeACL robust fine-tuning of an encoder: a loss, a training step and a ``fit`` loop.

    Minimizes :func:`deacl_loss` with a frozen teacher ``f`` (the pretrained encoder) and the
    student ``f_R`` being fine-tuned. Per batch: the teacher runs once under ``no_grad``; the
    adversarial images come from :class:`~ssl_robust.attacks.EmbedAttack` (cosine or L2
    distance, L∞ budget ``eps``) on the student in eval mode, pushing its embedding away from
    the teacher's (or its own) clean embedding, without touching any parameter ``.grad``; then
    the student runs once on the concatenated clean + adversarial batch in train mode.

    Use :meth:`training_step` in your own loop, or :meth:`fit` for the full recipe with
    checkpoint/resume and torch.distributed. All randomness (augmentation, attack start) comes
    from ``trainer.generator``, seeded with ``config.seed``.

    Args:
        student: the encoder to fine-tune (an :class:`~ssl_robust.encoders.Encoder` or any
            module returning an EncoderOutput, or a (B, D) tensor with ``tokens="cls"``). Put
            it on its device before building the trainer. It is trained **in place** (and put
            in train mode): keep ``copy.deepcopy(student)`` first to compare with the original.
        teacher: the frozen reference; defaults to a deep copy of ``student``. It is put in
            eval mode with ``requires_grad=False`` and never updated.
        config: a :class:`DeACLConfig` (the paper's preset by default).
        optimizer: defaults to SGD over the student's trainable parameters with the config's
            lr, momentum and weight decay.
        scheduler: defaults to :func:`warmup_cosine` per epoch over ``config.epochs``
            (``fit`` steps it once per epoch; in your own loop call ``trainer.scheduler.step()``
            after each epoch).

    Attributes:
        student: the encoder being fine-tuned (never wrapped; ``fit`` wraps it in DDP
            internally).
        teacher: the frozen reference encoder.
        config: the :class:`DeACLConfig`.
        generator: the trainer's random source (CPU ``torch.Generator``).
        optimizer: the optimizer.
        scheduler: the learning-rate scheduler (stepped per epoch).
        attack: the training :class:`~ssl_robust.attacks.EmbedAttack` on the student.
        epoch: epochs completed by :meth:`fit` (restored from checkpoints).

    Raises:
        SSLRobustTypeError: student/teacher not modules, config not a DeACLConfig.
        SSLRobustValueError: teacher is the student itself, or their embedding sizes differ.

    Example:
        >>> import torch
        >>> from ssl_robust.encoders import VisionTransformer
        >>> from ssl_robust.defenses import DeACLConfig, DeACLTrainer
        >>> enc = VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2)
        >>> trainer = DeACLTrainer(enc, config=DeACLConfig(steps=2, epochs=1, warmup_epochs=0))
        >>> stats = trainer.training_step(torch.rand(4, 3, 16, 16))
        >>> sorted(stats)
        ['adv_cos', 'clean_cos', 'loss', 'lr']
    """

    def __init__(
        self,
        student: nn.Module,
        *,
        teacher: nn.Module | None = None,
        config: DeACLConfig | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    ) -> None:
        config = DeACLConfig() if config is None else config
        if not isinstance(config, DeACLConfig):
            raise _checks.SSLRobustTypeError(
                f"config must be a DeACLConfig; got {type(config).__name__}"
            )
        for name, module in (("student", student), ("teacher", teacher)):
            if module is not None and not isinstance(module, nn.Module):
                raise _checks.SSLRobustTypeError(
                    f"{name} must be an nn.Module; got {type(module).__name__}"
                )
        if teacher is student:
            raise _checks.SSLRobustValueError(
                "teacher must not be the student itself (it would be updated); leave "
                "teacher=None for a frozen copy"
            )
        if teacher is None:
            teacher = copy.deepcopy(student)
        dims = getattr(student, "embed_dim", None), getattr(teacher, "embed_dim", None)
        if all(isinstance(d, int) for d in dims) and dims[0] != dims[1]:
            raise _checks.SSLRobustValueError(
                f"teacher and student must have the same embedding size; got teacher "
                f"embed_dim={dims[1]}, student embed_dim={dims[0]}"
            )
        teacher.eval().requires_grad_(False)
        self.student = student.train()
        self.teacher = teacher
        self.config = config
        self.generator = torch.Generator().manual_seed(config.seed)
        if optimizer is None:
            params = [p for p in student.parameters() if p.requires_grad]
            if not params:
                raise _checks.SSLRobustValueError("student has no trainable parameters")
            optimizer = torch.optim.SGD(
                params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
            )
        elif not isinstance(optimizer, torch.optim.Optimizer):
            raise _checks.SSLRobustTypeError(
                f"optimizer must be a torch.optim.Optimizer; got {type(optimizer).__name__}"
            )
        if scheduler is None:
            factor = functools.partial(
                warmup_cosine, epochs=config.epochs, warmup_epochs=config.warmup_epochs
            )
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        elif getattr(scheduler, "optimizer", optimizer) is not optimizer:
            raise _checks.SSLRobustValueError("scheduler must wrap the trainer's optimizer")
        self.optimizer = optimizer
        self.scheduler = scheduler
        #: Number of epochs completed by :meth:`fit` (restored from checkpoints).
        self.epoch = 0
        attack_cls = EmbedAttack if config.tokens == "cls" else _ClsPatchEmbedAttack
        self.attack = attack_cls(
            student,
            tokens="cls" if config.tokens == "cls" else "patch",
            distance=config.distance,
            eps=config.eps,
            step_size=config.step_size,
            steps=config.steps,
            select="last",
            generator=self.generator,
        )
        self._model: nn.Module = student  # the DDP wrapper while fit runs distributed
        self._separate = _has_batchnorm(student)
        self._checked = False

    # ------------------------------------------------------------------ the loss
    @property
    def device(self) -> torch.device:
        """Where the student's parameters live (batches are moved there)."""
        for p in self.student.parameters():
            return p.device
        return torch.device("cpu")

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        if self.config.amp == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _check_teacher(self, images: Tensor, teacher_out: Embedding) -> None:
        """Compare the teacher's and the student's embedding shapes once (1-image probe)."""
        was_training = self.student.training
        self.student.eval()
        try:
            with torch.no_grad():
                student_out = self.student(images[:1])
        finally:
            self.student.train(was_training)
        for part in ("cls",) if self.config.tokens == "cls" else ("cls", "patch"):
            s, t = _part(student_out, part), _part(teacher_out, part)
            if s.shape[1:] != t.shape[1:]:
                raise _checks.SSLRobustValueError(
                    f"teacher and student embeddings must have the same shape; got teacher "
                    f"{tuple(t.shape[1:])}, student {tuple(s.shape[1:])} per image ({part} "
                    "tokens) — the teacher must be the pretrained version of the student"
                )
        self._checked = True

    def _forward(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Teacher once (no grad), attack, one student pass on clean + adversarial."""
        cfg = self.config
        b = images.shape[0]
        with self._autocast(images.device):
            with torch.no_grad():
                teacher_out = self.teacher(images)
            if not self._checked:
                self._check_teacher(images, teacher_out)
            target: Any = None
            if cfg.attack_target == "teacher":
                target = teacher_out if cfg.tokens == "cls+patch" else _part(teacher_out, "cls")
            adversarial = self.attack(images, target)
            self.student.train()
            if self._separate:
                clean, adv = self._model(images), self._model(adversarial)
            else:
                both = self._model(torch.cat((images, adversarial)))
                clean, adv = both[:b], both[b:]
        return deacl_loss(clean, adv, teacher_out, gamma=cfg.gamma, tokens=cfg.tokens)

    def _prepare(self, batch: object) -> Tensor:
        images, _ = unpack_batch(batch, where="DeACL")
        x = _checks.check_images(images)
        return x.to(self.device, non_blocking=True)

    def loss(self, images: Tensor) -> Tensor:
        """The DeACL loss on ``images`` (no augmentation): a scalar with gradients.

        The attack starts from ``trainer.generator``; the student ends in train mode.

        Shape:
            - images: (B, C, H, W) in [0, 1].
        """
        return self._forward(self._prepare(images))[0]

    def training_step(self, images: Tensor | Any) -> dict[str, float]:
        """One optimizer step on a batch (augmented when ``config.augment``).

        ``images`` is an image batch (B, C, H, W) in [0, 1], or any loader batch
        :func:`~ssl_robust.data.unpack_batch` takes (a dict batch of
        :class:`~ssl_robust.data.Sample` s, an ``(images, target)`` pair); targets are unused.

        Returns:
            Plain floats: ``loss``, ``clean_cos`` (student vs teacher on clean images),
            ``adv_cos`` (student adversarial vs clean), the ``patch_*`` versions for
            ``tokens="cls+patch"``, and the learning rate ``lr`` used.
        """
        x = self._prepare(images)
        if self.config.augment:
            x = random_resized_crop_flip(x, generator=self.generator)
        loss, terms = self._forward(x)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        self.optimizer.step()
        stats = {"loss": float(loss.detach())}
        stats.update({k: float(v) for k, v in terms.items()})
        stats["lr"] = float(self.optimizer.param_groups[0]["lr"])
        return stats

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: student, optimizer, scheduler, epoch, RNG, config.

        Holds only tensors and plain Python values (loads with ``weights_only=True``).
        """
        return {
            "format": STATE_FORMAT,
            "config": self.config.to_dict(),
            "epoch": self.epoch,
            "student": self.student.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any], *, check_config: bool = True) -> None:
        """Restore a :meth:`state_dict`.

        Raises:
            SSLRobustValueError: not a DeACL trainer state, or (with ``check_config``) saved
                with a different config (the differing fields are listed).
        """
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise _checks.SSLRobustValueError(
                f"not a DeACLTrainer state (format {STATE_FORMAT!r}); got {found!r}"
            )
        diffs = self.config.differences(state["config"])
        if check_config and diffs:
            raise _checks.SSLRobustValueError(
                "the state was saved with a different DeACLConfig: " + "; ".join(diffs)
            )
        self.student.load_state_dict(state["student"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        self.epoch = int(state["epoch"])

    def export_student(self, path: str | Path) -> Path:
        """Save the student's weights as a plain state dict (``torch.save``, written atomically).

        For a :class:`~ssl_robust.encoders.VisionTransformer` the keys are the official DINO /
        DINOv2 names, the format ``create_encoder(..., checkpoint_path=path)`` loads.
        """
        path = Path(path)
        atomic_save(self.student.state_dict(), path)
        return path

    # ------------------------------------------------------------------ the loop
    def fit(
        self,
        loader: Iterable[Any],
        *,
        epochs: int | None = None,
        checkpoint_dir: str | Path | None = None,
        callbacks: Iterable[EpochCallback] = (),
        overwrite: bool = False,
        progress: bool = True,
    ) -> list[dict[str, float]]:
        """Train until ``epochs`` epochs (default ``config.epochs``) have run in total.

        The learning-rate schedule always spans ``config.epochs``, so ``fit(epochs=10)``
        followed by ``fit(epochs=20)`` is the same run as ``fit(epochs=20)``. With
        ``checkpoint_dir``, a checkpoint is written after every epoch (atomically; rank 0 only
        under torch.distributed) and an existing one is resumed from automatically. Under an
        initialized process group (torchrun) the student is wrapped in
        DistributedDataParallel and ``set_epoch`` is called on the loader's sampler.

        Args:
            loader: yields image batches (B, C, H, W) in [0, 1], ``(images, ...)`` tuples or
                dict batches of :class:`~ssl_robust.data.Sample` s (a DataLoader over
                :func:`~ssl_robust.data.create_dataset`); targets are ignored.
            epochs: total epochs to reach (<= ``config.epochs``).
            checkpoint_dir: where to keep ``deacl_checkpoint.pt``.
            callbacks: called as ``callback(epoch, student)`` with the student in eval mode
                before training (epoch 0, fresh runs only) and after every epoch (epochs
                completed so far), e.g. to record robustness curves.
            overwrite: start afresh even if ``checkpoint_dir`` holds a checkpoint (of any
                config), replacing it.
            progress: show a tqdm bar (rank 0, when tqdm is installed).

        Returns:
            One dict per epoch run now: mean ``loss``, ``clean_cos``, ``adv_cos`` (and patch
            terms), ``lr``, ``time`` (seconds) and ``epoch``.

        Raises:
            SSLRobustValueError: ``epochs`` beyond ``config.epochs``, an empty loader, or a
                checkpoint of a different config without ``overwrite=True``.
            SSLRobustTypeError: the loader yields something other than image batches.
        """
        return _loop.fit(
            self,
            loader,
            epochs=epochs,
            checkpoint_dir=checkpoint_dir,
            callbacks=tuple(callbacks),
            overwrite=overwrite,
            progress=progress,
        )

    def __repr__(self) -> str:
        return f"DeACLTrainer(epoch={self.epoch}, config={self.config})"
