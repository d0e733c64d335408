"""DeACL robust fine-tuning (paper §3.3; Zhang et al. 2022): the preset of the robust loop."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from .. import _checks
from .config import DeACLConfig
from .objectives import DeACL, deacl_loss
from .robust import RobustTrainer
from .schedule import warmup_cosine

__all__ = ["DeACLTrainer", "deacl_loss", "warmup_cosine"]

#: Tag stored in trainer state dicts and checkpoints.
STATE_FORMAT = "ssl_robust.deacl/1"


class DeACLTrainer(RobustTrainer):
    r"""DeACL robust fine-tuning of an encoder: a loss, a training step and a ``fit`` loop.

    Minimizes :func:`deacl_loss` with a frozen teacher ``f`` (the pretrained encoder) and the
    student ``f_R`` being fine-tuned. Per batch: the teacher runs once under ``no_grad``; the
    adversarial images come from :class:`~ssl_robust.attacks.EmbedAttack` (cosine or L2
    distance, L∞ budget ``eps``) on the student in eval mode, pushing its embedding away from
    the teacher's (or its own) clean embedding, without touching any parameter ``.grad``; then
    the student runs once on the concatenated clean + adversarial batch in train mode.

    This is :class:`~ssl_robust.defenses.RobustTrainer` with ``objectives=[DeACL(...)]`` built
    from a :class:`DeACLConfig`; its checkpoints (``deacl_checkpoint.pt``) store the
    DeACLConfig.

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

    checkpoint_name: ClassVar[str] = "deacl_checkpoint.pt"
    label: ClassVar[str] = "DeACL"
    _config_name: ClassVar[str] = "DeACLConfig"

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
        objective = DeACL(
            gamma=config.gamma,
            tokens=config.tokens,
            eps=config.eps,
            step_size=config.step_size,
            steps=config.steps,
            distance=config.distance,
            attack_target=config.attack_target,
        )
        self._setup(
            student, teacher, [objective], "avg", config.loop_config(), optimizer, scheduler
        )
        self.config = config
        assert objective.embed_attack is not None
        self.attack = objective.embed_attack

    def _header(self) -> dict[str, Any]:
        return {"format": STATE_FORMAT, "config": self.config.to_dict()}

    def _differences(self, state: dict[str, Any]) -> list[str]:
        return self.config.differences(state["config"])  # type: ignore[no-any-return]

    def load_state_dict(self, state: dict[str, Any], *, check_config: bool = True) -> None:
        """Restore a :meth:`state_dict`.

        Raises:
            SSLRobustValueError: not a DeACL trainer state, or (with ``check_config``) saved
                with a different config (the differing fields are listed).
        """
        super().load_state_dict(state, check_config=check_config)

    def __repr__(self) -> str:
        return f"DeACLTrainer(epoch={self.epoch}, config={self.config})"
