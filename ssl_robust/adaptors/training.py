"""``fit()``: train a head on a frozen encoder with the paper's presets (§4.1, App. C)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
from torch import Tensor

from .. import _checks
from ..data.batches import unpack_batch
from ..runtime import progress_bar, tick
from ._features import FeatureCache
from .base import TaskModel

__all__ = ["PRESETS", "FitPreset", "fit"]

logger = logging.getLogger("ssl_robust.adaptors")


@dataclass(frozen=True)
class FitPreset:
    """Training settings of a head (see :data:`PRESETS`).

    Attributes:
        optimizer: ``"adam"`` or ``"adamw"``.
        lr: learning rate.
        weight_decay: weight decay.
        epochs: passes over the loader.
        batch_size: batch size used when ``fit`` is given a Dataset (a loader keeps its own).
        hflip: random horizontal flips (p = ½, per sample; masks/depth flipped alike).
        vflip: random vertical flips.
        crop: random crops (segmentation; ``crop_size`` defaults to the encoder's img_size).
    """

    optimizer: Literal["adam", "adamw"]
    lr: float
    weight_decay: float
    epochs: int
    batch_size: int
    hflip: bool
    vflip: bool
    crop: bool


_CACHE_BYTES = 1 << 30  # largest feature cache fit builds by itself

#: The paper's head-training settings of the built-in tasks (each task's
#: :attr:`~ssl_robust.tasks.TaskSpec.fit_preset`; registered tasks bring their own).
PRESETS: dict[str, FitPreset] = {
    "classification": FitPreset("adam", 0.5, 0.0, 5, 16, True, False, False),
    "segmentation": FitPreset("adamw", 1e-4, 1e-3, 50, 16, True, True, True),
    "depth": FitPreset("adamw", 1e-4, 0.01, 20, 128, False, False, False),
}


def _flip(x: Tensor, which: Tensor, dim: int) -> Tensor:
    return torch.where(which.view(-1, *([1] * (x.ndim - 1))), x.flip(dim), x)


def _crop(
    images: Tensor, target: Tensor, size: tuple[int, int], gen: torch.Generator
) -> tuple[Tensor, Tensor]:
    """One random crop per sample, by indexing (no loop over samples)."""
    b, _, h, w = images.shape
    ch, cw = min(size[0], h), min(size[1], w)
    if (ch, cw) == (h, w):
        return images, target
    ys = (torch.rand(b, generator=gen) * (h - ch + 1)).long().to(images.device)
    xs = (torch.rand(b, generator=gen) * (w - cw + 1)).long().to(images.device)
    rows = (ys[:, None] + torch.arange(ch, device=images.device))[:, :, None]
    cols = (xs[:, None] + torch.arange(cw, device=images.device))[:, None, :]
    bi = torch.arange(b, device=images.device)[:, None, None]
    return images[bi, :, rows, cols].permute(0, 3, 1, 2), target[bi, rows, cols]


def _ddp_group(model: object) -> Any:
    """The process group of a DistributedDataParallel wrapper (outermost), else None."""
    inner = getattr(model, "_orig_mod", model)
    if isinstance(inner, torch.nn.parallel.DistributedDataParallel):
        return inner.process_group
    return None


def _average_grads(params: list[torch.nn.Parameter], group: Any) -> None:
    """Average the gradients of ``params`` over ``group`` (what DDP does for the head)."""
    world = torch.distributed.get_world_size(group)
    for p in params:
        if p.grad is not None:
            torch.distributed.all_reduce(p.grad, group=group)
            p.grad.div_(world)


def fit(
    task_model: TaskModel | torch.nn.Module,
    loader: Iterable[Any] | torch.utils.data.Dataset[Any],
    *,
    preset: str | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    weight_decay: float | None = None,
    hflip: bool | None = None,
    vflip: bool | None = None,
    crop: bool | None = None,
    crop_size: int | tuple[int, int] | None = None,
    ignore_index: int = 255,
    generator: torch.Generator | None = None,
    cache_features: bool | None = None,
    progress: bool = True,
) -> dict[str, list[float]]:
    """Train the head of ``task_model`` on a frozen encoder (the paper's linear protocols).

    The encoder is frozen for the whole call: its parameters get no gradient
    (``requires_grad`` is switched off and restored afterwards, also on errors), it runs in
    eval mode, and features are computed under ``torch.no_grad()``. Only the head's parameters
    are optimized. Losses: cross-entropy (classification); pixel cross-entropy averaged over
    the pixels whose label is not ``ignore_index`` (segmentation, exactly the pixels MeanIoU and
    SegPGD use); :func:`~ssl_robust.losses.depth_loss` over ``min_depth < target <= max_depth``
    of the head (depth). Augmentations (flips, crops) draw from ``generator`` only. When done,
    the whole ``task_model`` is left in eval mode.

    Presets (:data:`PRESETS`, every field overridable by the keyword of the same name):

    =============== ======= ====== ====== ====== ===== ==========================
    preset          optim   lr     wd     epochs batch augmentation
    =============== ======= ====== ====== ====== ===== ==========================
    classification  Adam    0.5    0      5      16    horizontal flip
    segmentation    AdamW   1e-4   1e-3   50     16    random crop, h + v flips
    depth           AdamW   1e-4   0.01   20     128   none
    =============== ======= ====== ====== ====== ===== ==========================

    Args:
        task_model: ``TaskModel(encoder, head)``; the head's ``task`` picks the loss. It may
            be ``torch.compile``-d or wrapped in ``DistributedDataParallel`` (the head's
            gradients are then averaged over the DDP process group, so every rank keeps the
            same head) or ``DataParallel``.
        loader: re-iterable source of batches (a DataLoader, a list): ``(images, target)``
            pairs, or dict batches of :class:`~ssl_robust.data.Sample` s (a DataLoader over
            :func:`~ssl_robust.data.create_dataset`), whose target is the task's key
            (:func:`~ssl_robust.data.unpack_batch`); or a Dataset of either (batched with
            the preset's batch size, shuffled by ``generator``). Targets: labels (B,), masks
            (B, H, W) int64, or depth (B, H, W) / (B, 1, H, W).
        preset: a task name (``"classification"``, ``"segmentation"``, ``"depth"`` or a
            registered task, whose :attr:`~ssl_robust.tasks.TaskSpec.fit_preset` is used);
            default: the head's task (a preset for another task is an error).
        epochs, lr, weight_decay, hflip, vflip, crop: override the preset.
        crop_size: random crop size (int or (h, w)); default: the encoder's ``img_size``. Sizes
            larger than the image leave that dimension uncropped.
        ignore_index: mask label ignored by the segmentation loss.
        generator: source of augmentation randomness; default ``Generator().manual_seed(0)``.
        cache_features: compute the frozen encoder's features once (per flip combination)
            instead of every epoch: the same batches (replayed from the DataLoader's sampler)
            and augmentations, far less compute. ``None`` (default): whenever possible (a
            DataLoader over a map-style dataset, no random crop smaller than the images,
            features within 1 GiB); ``True``: required (an error otherwise); ``False``: never.
        progress: show a tqdm bar (when tqdm is installed); epoch losses are always logged
            to the ``ssl_robust.adaptors`` logger at INFO level.

    Returns:
        ``{"loss": [mean training loss per epoch]}``.

    Raises:
        SSLRobustTypeError: not a TaskModel, a one-shot iterator as loader, bad batch types.
        SSLRobustValueError: a preset for another task, bad options, a head with fewer classes
            than the loader's dataset declares (e.g. a segmentation head built from
            ``info.num_classes`` instead of ``info.seg_classes``), bad batches (a dict batch
            without the task's target key, mask or depth shape mismatch, labels out of range
            that are not ``ignore_index``, negative depth).

    Example:
        >>> import torch
        >>> from ssl_robust.adaptors import LinearSegmenter, TaskModel, fit
        >>> from ssl_robust.encoders import VisionTransformer
        >>> enc = VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2)
        >>> model = TaskModel(enc, LinearSegmenter(16, 3))
        >>> data = [(torch.rand(4, 3, 16, 16), torch.randint(0, 3, (4, 16, 16)))]
        >>> hist = fit(model, data, epochs=2, lr=1e-2, progress=False)
        >>> len(hist["loss"]), model.training
        (2, False)
    """
    # A DDP-wrapped TaskModel: the head's gradients are averaged over its process group.
    ddp_group = _ddp_group(task_model)
    task_model = _checks.inner_module(task_model)
    if not isinstance(task_model, TaskModel):
        raise _checks.SSLRobustTypeError(
            f"fit needs a TaskModel(encoder, head) (also compiled or DDP-wrapped); got "
            f"{type(task_model).__name__}"
        )
    task = task_model.task
    if preset is None:
        preset = task  # type: ignore[assignment]
    from ..tasks import check_head_classes, get_task, list_tasks  # tasks builds heads from here

    if not isinstance(preset, str) or preset not in list_tasks():
        _checks.check_choice("preset", preset, tuple(list_tasks()))
    name = str(preset)
    if name != task:
        raise _checks.SSLRobustValueError(
            f"preset {name!r} does not match the head's task {task!r} "
            f"({type(task_model.adaptor).__name__})"
        )
    spec = get_task(name)
    cfg = spec.fit_preset
    head_facts = spec.head_info(_checks.inner_module(task_model.adaptor))
    info = dataclasses.replace(head_facts, ignore_index=ignore_index)
    overrides: dict[str, Any] = {}
    if epochs is not None:
        overrides["epochs"] = _checks.check_int("epochs", epochs, minimum=0)
    if lr is not None:
        overrides["lr"] = _checks.check_positive_float("lr", lr)
    if weight_decay is not None:
        overrides["weight_decay"] = _checks.check_positive_float(
            "weight_decay", weight_decay, allow_zero=True
        )
    for key, val in (("hflip", hflip), ("vflip", vflip), ("crop", crop)):
        if val is not None:
            overrides[key] = bool(val)
    cfg = replace(cfg, **overrides)
    _checks.check_ignore_index(ignore_index)
    gen = _checks.check_generator(generator) or torch.Generator().manual_seed(0)
    if crop_size is None:
        size = int(getattr(task_model.encoder, "img_size", 1 << 30))
        crop_hw = (size, size)
    else:
        crop_hw = _checks.check_pair("crop_size", crop_size)
    if isinstance(loader, torch.utils.data.Dataset) and not isinstance(loader, (list, tuple)):
        loader = torch.utils.data.DataLoader(
            loader, batch_size=cfg.batch_size, shuffle=True, generator=gen
        )
    if iter(loader) is loader:  # type: ignore[arg-type]
        raise _checks.SSLRobustTypeError(
            "loader must be re-iterable (a DataLoader or a list of batches), not a one-shot "
            "iterator/generator — every epoch iterates it again"
        )

    encoder, head = task_model.encoder, task_model.adaptor
    check_head_classes(head, loader, task=name)  # before any batch is read
    params = [p for p in head.parameters() if p.requires_grad]
    opt_cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    opt = opt_cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    device = next(iter(task_model.parameters())).device
    enc_params = list(encoder.parameters())
    enc_flags = [p.requires_grad for p in enc_params]
    enc_modes = [m.training for m in encoder.modules()]
    history: dict[str, list[float]] = {"loss": []}
    bar = progress_bar(cfg.epochs, f"fit {name}", enabled=progress, unit="epoch")
    try:
        for p in enc_params:
            p.requires_grad_(False)
        encoder.eval()
        head.train()
        flips = (cfg.hflip, cfg.vflip)

        def prepare(images: Tensor, target: Any) -> tuple[Tensor, Tensor]:
            target = spec.check_target(target, images, head, ignore_index)
            return images.to(device), target.to(device)

        def from_images() -> Iterator[tuple[Any, Tensor, tuple[int, int]]]:
            for batch in loader:  # type: ignore[union-attr]
                images, target = unpack_batch(batch, target=spec.target_key, where="fit's loader")
                images, target = prepare(_checks.check_image_tensor(images), target)
                if cfg.crop and spec.dense:
                    images, target = _crop(images, target, crop_hw, gen)
                for dim, on in ((-1, cfg.hflip), (-2, cfg.vflip)):
                    if on:
                        which = (torch.rand(images.shape[0], generator=gen) < 0.5).to(device)
                        images = _flip(images, which, dim)
                        if spec.dense:
                            target = _flip(target, which, dim)
                with torch.no_grad():
                    feats = encoder(images)
                yield feats, target, (int(images.shape[2]), int(images.shape[3]))

        cache = None
        if cache_features is not False:
            cache = FeatureCache.build(
                loader,
                encoder,
                target_key=spec.target_key,
                prepare=prepare,
                flips=flips,
                crop_hw=crop_hw if cfg.crop and spec.dense else (1 << 30, 1 << 30),
                device=device,
                max_bytes=_CACHE_BYTES,
            )
            if cache is None and cache_features:
                raise _checks.SSLRobustValueError(
                    "cache_features=True needs a DataLoader over a map-style dataset, no random "
                    f"crop smaller than the images, and features within {_CACHE_BYTES >> 30} GiB"
                )
        for epoch in range(cfg.epochs):
            total, batches = 0.0, 0
            source = cache.epoch(flips, gen, device) if cache is not None else from_images()
            for feats, target, hw in source:
                out = head(feats, hw)
                loss = spec.train_loss(out, target, info)
                opt.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                if ddp_group is not None:
                    _average_grads(params, ddp_group)
                opt.step()
                total += float(loss.detach())
                batches += 1
            mean = total / max(batches, 1)
            history["loss"].append(mean)
            logger.info("fit %s: epoch %d/%d, loss %.4f", name, epoch + 1, cfg.epochs, mean)
            tick(bar, 1, loss=f"{mean:.4f}")
    finally:
        if bar is not None:
            bar.close()
        for p, flag in zip(enc_params, enc_flags, strict=True):
            p.requires_grad_(flag)
        for m, mode in zip(encoder.modules(), enc_modes, strict=True):
            m.training = mode
        opt.zero_grad(set_to_none=True)
    task_model.eval()
    return history
