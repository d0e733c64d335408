"""The ``fit`` loop of :class:`DeACLTrainer`: epochs, checkpoints, resume, torch.distributed."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from .. import _checks
from ..runtime import atomic_save, progress_bar, rank_world

if TYPE_CHECKING:
    from .deacl import DeACLTrainer

__all__ = ["CHECKPOINT_NAME", "fit"]

#: File name of the checkpoint ``fit`` keeps in ``checkpoint_dir``.
CHECKPOINT_NAME = "deacl_checkpoint.pt"

logger = logging.getLogger("ssl_robust.defenses")


def _distributed() -> tuple[bool, int]:
    return dist.is_available() and dist.is_initialized(), rank_world()[0]


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """Seed of the trainer's generator for one epoch on one rank (independent streams)."""
    digest = hashlib.sha256(f"deacl:{seed}:{epoch}:{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _set_epoch(loader: object, epoch: int) -> bool:
    """Call ``set_epoch`` on the loader's sampler (DistributedSampler), if it has one."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    for sampler in (getattr(loader, "sampler", None), getattr(batch_sampler, "sampler", None)):
        if sampler is not None and callable(getattr(sampler, "set_epoch", None)):
            sampler.set_epoch(epoch)
            return True
    return False


def _wrap_ddp(trainer: DeACLTrainer) -> nn.Module:
    """DistributedDataParallel around the student; the teacher is made equal to rank 0's."""
    from torch.nn.parallel import DistributedDataParallel

    if trainer._separate:
        raise _checks.SSLRobustValueError(
            "students with BatchNorm layers are not supported under torch.distributed (the "
            "clean and adversarial passes must run separately for them); use a ViT, or "
            "replace BatchNorm with LayerNorm/GroupNorm"
        )
    with torch.no_grad():
        for t in [*trainer.teacher.parameters(), *trainer.teacher.buffers()]:
            dist.broadcast(t.data, src=0)
    device = trainer.device
    return DistributedDataParallel(
        trainer.student,
        device_ids=[device] if device.type == "cuda" else None,
        # Parameters that never enter the forward (DINOv2's mask_token) must not stall the
        # reduction. (static_graph=True was tried: ranks diverged under the gloo test.)
        find_unused_parameters=True,
    )


def _check_same_epoch(trainer: DeACLTrainer) -> None:
    """Every rank must start from the same epoch (the checkpoint must be visible to all)."""
    epochs = torch.tensor([trainer.epoch, -trainer.epoch], device=trainer.device)
    dist.all_reduce(epochs, op=dist.ReduceOp.MAX)
    if int(epochs[0]) != -int(epochs[1]):
        raise _checks.SSLRobustValueError(
            f"ranks resume from different epochs ({-int(epochs[1])} to {int(epochs[0])}); "
            "checkpoint_dir must be on a filesystem every rank can read"
        )


def _run_callbacks(
    trainer: DeACLTrainer, epoch: int, callbacks: tuple[Callable[[int, nn.Module], Any], ...]
) -> None:
    student = trainer.student
    was_training = student.training
    student.eval()
    try:
        for callback in callbacks:
            callback(epoch, student)
    finally:
        student.train(was_training)


def _progress(loader: object, epochs: int, enabled: bool) -> Any:
    n = len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
    return progress_bar(None if n is None else n * epochs, "DeACL", enabled=enabled, unit="batch")


def _load_checkpoint(trainer: DeACLTrainer, path: Path) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        trainer.load_state_dict(state)
    except _checks.SSLRobustValueError as err:
        raise _checks.SSLRobustValueError(
            f"{path} holds a checkpoint of another run ({err}); pass overwrite=True to start "
            "afresh and replace it, or choose another checkpoint_dir"
        ) from None
    logger.info("DeACL: resumed from %s after epoch %d", path, trainer.epoch)


def fit(
    trainer: DeACLTrainer,
    loader: Iterable[Any],
    *,
    epochs: int | None,
    checkpoint_dir: str | Path | None,
    callbacks: tuple[Callable[[int, nn.Module], Any], ...],
    overwrite: bool,
    progress: bool,
) -> list[dict[str, float]]:
    """See :meth:`DeACLTrainer.fit`."""
    cfg = trainer.config
    total = cfg.epochs if epochs is None else _checks.check_int("epochs", epochs, minimum=0)
    if total > cfg.epochs:
        raise _checks.SSLRobustValueError(
            f"epochs must be <= config.epochs={cfg.epochs} (the learning-rate schedule spans "
            f"config.epochs); got {total} — raise config.epochs instead"
        )
    for callback in callbacks:
        if not callable(callback):
            raise _checks.SSLRobustTypeError(
                f"callbacks must be callables callback(epoch, student); got "
                f"{type(callback).__name__}"
            )
    distributed, rank = _distributed()
    path = None if checkpoint_dir is None else Path(checkpoint_dir) / CHECKPOINT_NAME
    if path is not None and path.exists() and not overwrite:
        _load_checkpoint(trainer, path)
    if distributed:
        _check_same_epoch(trainer)
    if trainer.epoch >= total:
        return []

    history: list[dict[str, float]] = []
    trainer._model = _wrap_ddp(trainer) if distributed else trainer.student
    bar = _progress(loader, total - trainer.epoch, progress and rank == 0)
    try:
        if trainer.epoch == 0 and callbacks:
            _run_callbacks(trainer, 0, callbacks)
        for epoch in range(trainer.epoch, total):
            if not _set_epoch(loader, epoch) and distributed and epoch == trainer.epoch:
                logger.warning(
                    "DeACL under torch.distributed without a DistributedSampler: every rank "
                    "sees the same batches"
                )
            trainer.generator.manual_seed(_epoch_seed(cfg.seed, epoch, rank))
            start = time.perf_counter()
            lr = float(trainer.optimizer.param_groups[0]["lr"])
            sums: dict[str, float] = {}
            count = 0
            for batch in loader:
                stats = trainer.training_step(batch)
                for key, value in stats.items():
                    sums[key] = sums.get(key, 0.0) + value
                count += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(epoch=epoch + 1, loss=f"{stats['loss']:.4f}")
            if count == 0:
                raise _checks.SSLRobustValueError("the loader yielded no batches")
            trainer.scheduler.step()
            trainer.epoch = epoch + 1
            keys = sorted(k for k in sums if k != "lr")
            means = torch.tensor([sums[k] / count for k in keys], dtype=torch.float64)
            if distributed:
                means = means.to(trainer.device)
                dist.all_reduce(means)
                means = means.cpu() / dist.get_world_size()
            record = dict(zip(keys, means.tolist(), strict=True))
            record.update(lr=lr, time=time.perf_counter() - start, epoch=float(epoch + 1))
            history.append(record)
            if path is not None and rank == 0:
                atomic_save(trainer.state_dict(), path)
            if distributed:
                dist.barrier()
            if rank == 0:
                logger.info(
                    "DeACL epoch %d/%d: %s, lr=%.4g, time=%.1fs",
                    epoch + 1,
                    total,
                    ", ".join(f"{k}={record[k]:.4f}" for k in keys),
                    lr,
                    record["time"],
                )
            _run_callbacks(trainer, epoch + 1, callbacks)
    finally:
        trainer._model = trainer.student
        if bar is not None:
            bar.close()
    return history
