"""The ``fit`` loop of the robust trainers: epochs, checkpoints, resume, torch.distributed.

The loop knows the trainer only through :class:`LoopTrainer` (what it calls), so it imports no
trainer: the trainers import it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn

from .. import _checks
from ..runtime import atomic_save, progress_bar, rank_world

__all__ = ["CHECKPOINT_NAME", "EpochCallback", "LoopTrainer", "fit"]

#: File name of the checkpoint LoopTrainer's ``fit`` keeps in ``checkpoint_dir``.
CHECKPOINT_NAME = "deacl_checkpoint.pt"

EpochCallback = Callable[[int, nn.Module], Any]


class LoopTrainer(Protocol):
    """What ``fit`` needs of a trainer."""

    @property
    def checkpoint_name(self) -> str: ...

    @property
    def label(self) -> str: ...

    student: nn.Module
    teacher: nn.Module
    generator: torch.Generator
    optimizer: torch.optim.Optimizer
    scheduler: Any
    epoch: int
    loop_config: Any
    _model: nn.Module
    _pass_module: nn.Module
    _separate: bool

    @property
    def device(self) -> torch.device: ...

    @property
    def tasks(self) -> list[str]: ...

    def training_step(
        self, batch: Any, *, tasks: Sequence[str] | None = None
    ) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any], *, check_config: bool = True) -> None: ...


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


def _wrap_ddp(trainer: LoopTrainer) -> nn.Module:
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
        trainer._pass_module,
        device_ids=[device] if device.type == "cuda" else None,
        # Parameters that never enter the forward (DINOv2's mask_token) must not stall the
        # reduction. (static_graph=True was tried: ranks diverged under the gloo test.)
        find_unused_parameters=True,
    )


def _check_same_epoch(trainer: LoopTrainer) -> None:
    """Every rank must start from the same epoch (the checkpoint must be visible to all)."""
    epochs = torch.tensor([trainer.epoch, -trainer.epoch], device=trainer.device)
    dist.all_reduce(epochs, op=dist.ReduceOp.MAX)
    if int(epochs[0]) != -int(epochs[1]):
        raise _checks.SSLRobustValueError(
            f"ranks resume from different epochs ({-int(epochs[1])} to {int(epochs[0])}); "
            "checkpoint_dir must be on a filesystem every rank can read"
        )


def _run_callbacks(trainer: LoopTrainer, epoch: int, callbacks: tuple[EpochCallback, ...]) -> None:
    student = trainer.student
    was_training = student.training
    student.eval()
    try:
        for callback in callbacks:
            callback(epoch, student)
    finally:
        student.train(was_training)


def _progress(n: int | None, epochs: int, enabled: bool, label: str) -> Any:
    return progress_bar(None if n is None else n * epochs, label, enabled=enabled, unit="batch")


def _length(loader: object) -> int | None:
    return len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]


def _check_loaders(trainer: LoopTrainer, loaders: Mapping[str, Iterable[Any]]) -> None:
    heads = trainer.tasks
    missing = [t for t in heads if t not in loaders]
    extra = [t for t in loaders if t not in heads]
    if not loaders or missing or extra:
        raise _checks.SSLRobustValueError(
            "fit({task: loader}) needs exactly one loader per TaskAT head; heads: "
            f"{heads}, loaders given for: {sorted(map(str, loaders))}"
            + (f" (no loader for {missing})" if missing else "")
            + (f" (no head for {extra})" if extra else "")
        )
    for task, ld in loaders.items():
        if iter(ld) is ld:
            raise _checks.SSLRobustTypeError(
                f"the {task} loader must be re-iterable (a DataLoader or a list), not a "
                "one-shot iterator"
            )
        if _length(ld) is None:
            raise _checks.SSLRobustTypeError(
                f"the {task} loader must have a length (a DataLoader or a list) to be cycled"
            )


def _interleave(loaders: Mapping[str, Iterable[Any]]) -> Iterator[tuple[Any, tuple[str, ...]]]:
    """One batch of each loader in turn; shorter ones restart until the longest is done."""
    longest = max(_length(ld) or 0 for ld in loaders.values())
    its = {t: iter(ld) for t, ld in loaders.items()}
    for _ in range(longest):
        for task, ld in loaders.items():
            try:
                batch = next(its[task])
            except StopIteration:
                its[task] = iter(ld)
                batch = next(its[task])
            yield batch, (task,)


def _batches(loader: Any) -> Iterator[tuple[Any, tuple[str, ...] | None]]:
    if isinstance(loader, Mapping):
        yield from _interleave(loader)
    else:
        for batch in loader:
            yield batch, None


def _load_checkpoint(trainer: LoopTrainer, path: Path) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        trainer.load_state_dict(state)
    except _checks.SSLRobustValueError as err:
        raise _checks.SSLRobustValueError(
            f"{path} holds a checkpoint of another run ({err}); pass overwrite=True to start "
            "afresh and replace it, or choose another checkpoint_dir"
        ) from None
    logger.info("%s: resumed from %s after epoch %d", trainer.label, path, trainer.epoch)


def fit(
    trainer: LoopTrainer,
    loader: Iterable[Any] | Mapping[str, Iterable[Any]],
    *,
    epochs: int | None,
    checkpoint_dir: str | Path | None,
    callbacks: tuple[EpochCallback, ...],
    overwrite: bool,
    progress: bool,
) -> list[dict[str, float]]:
    """See :meth:`RobustTrainer.fit`."""
    cfg = trainer.loop_config
    if isinstance(loader, Mapping):
        _check_loaders(trainer, loader)
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
    path = None if checkpoint_dir is None else Path(checkpoint_dir) / trainer.checkpoint_name
    if path is not None and path.exists() and not overwrite:
        _load_checkpoint(trainer, path)
    if distributed:
        _check_same_epoch(trainer)
    if trainer.epoch >= total:
        return []

    history: list[dict[str, float]] = []
    trainer._model = _wrap_ddp(trainer) if distributed else trainer._pass_module
    loaders = list(loader.values()) if isinstance(loader, Mapping) else [loader]
    n = None
    if all(_length(ld) is not None for ld in loaders):
        n = max(_length(ld) or 0 for ld in loaders) * len(loaders)
    bar = _progress(n, total - trainer.epoch, progress and rank == 0, trainer.label)
    try:
        if trainer.epoch == 0 and callbacks:
            _run_callbacks(trainer, 0, callbacks)
        for epoch in range(trainer.epoch, total):
            samplers = [_set_epoch(ld, epoch) for ld in loaders]
            if not all(samplers) and distributed and epoch == trainer.epoch:
                logger.warning(
                    "%s under torch.distributed without a DistributedSampler: every rank "
                    "sees the same batches",
                    trainer.label,
                )
            trainer.generator.manual_seed(_epoch_seed(cfg.seed, epoch, rank))
            start = time.perf_counter()
            lr = float(trainer.optimizer.param_groups[0]["lr"])
            sums: dict[str, float] = {}
            counts: dict[str, int] = {}
            count = 0
            for batch, tasks in _batches(loader):
                stats = trainer.training_step(batch, tasks=tasks)
                for key, value in stats.items():
                    sums[key] = sums.get(key, 0.0) + value
                    counts[key] = counts.get(key, 0) + 1
                count += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(epoch=epoch + 1, loss=f"{stats['loss']:.4f}")
            if count == 0:
                raise _checks.SSLRobustValueError("the loader yielded no batches")
            trainer.scheduler.step()
            trainer.epoch = epoch + 1
            keys = sorted(k for k in sums if k != "lr")
            means = torch.tensor([sums[k] / counts[k] for k in keys], dtype=torch.float64)
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
                    "%s epoch %d/%d: %s, lr=%.4g, time=%.1fs",
                    trainer.label,
                    epoch + 1,
                    total,
                    ", ".join(f"{k}={record[k]:.4f}" for k in keys),
                    lr,
                    record["time"],
                )
            _run_callbacks(trainer, epoch + 1, callbacks)
    finally:
        trainer._model = trainer._pass_module
        if bar is not None:
            bar.close()
    return history
