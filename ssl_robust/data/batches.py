"""One data path: the batches of any DataLoader, taken apart the same way by every loop.

A ``DataLoader`` over a :func:`~ssl_robust.data.create_dataset` dataset yields dict batches
(``{"image": (B, 3, H, W), "label": (B,), ...}``, PyTorch's default collate stacks the
:class:`~ssl_robust.data.Sample` dicts); a torchvision-style dataset yields ``(images, target)``
pairs; an unlabelled one yields bare image tensors. :func:`unpack_batch` accepts all three and
returns ``(images, target)``, so ``fit``, ``DeACLTrainer.fit`` / ``training_step`` and
:func:`ssl_robust.evaluate` take any of these loaders directly.

Example:
    >>> import torch
    >>> from ssl_robust.data import create_dataset
    >>> loader = torch.utils.data.DataLoader(
    ...     create_dataset("shapes", size=8, image_size=32), batch_size=4)
    >>> images, labels = unpack_batch(next(iter(loader)), target="label")
    >>> images.shape, labels.shape
    (torch.Size([4, 3, 32, 32]), torch.Size([4]))
    >>> try:
    ...     unpack_batch({"image": images, "mask": labels}, target="depth")
    ... except ValueError as err:
    ...     print(str(err)[:55])
    the batch has no 'depth' target: its keys are ['image',
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from .. import _checks

__all__ = ["unpack_batch"]


def unpack_batch(
    batch: object, *, target: str | None = None, where: str = "the loader"
) -> tuple[Tensor, Any]:
    """Split a loader batch into ``(images, target)``.

    Args:
        batch: a dict batch with an ``"image"`` key (collated :class:`~ssl_robust.data.Sample`
            dicts), an ``(images, target, ...)`` tuple/list, or an image tensor.
        target: the key of the target wanted from dict batches (``"label"``, ``"mask"``,
            ``"depth"``; :attr:`ssl_robust.tasks.TaskSpec.target_key`); None when only
            images are needed (then the target returned is None).
        where: the loop's name, for error messages.

    Returns:
        ``(images, target)``: images (B, C, H, W) (values are checked where they are used),
        and the target (None when ``target`` is None).

    Raises:
        SSLRobustValueError: a dict batch without ``"image"`` or without the ``target`` key
            (the message lists the keys present), a bare tensor or 1-tuple where a target is
            needed.
        SSLRobustTypeError: anything else.
    """
    if isinstance(batch, Mapping):
        keys = sorted(str(k) for k in batch)
        needed = "'image'" + ("" if target is None else f" and {target!r}")
        if "image" not in batch:
            raise _checks.SSLRobustValueError(
                f"the batch has no 'image': its keys are {keys}; {where} needs {needed}"
            )
        if target is not None and target not in batch:
            raise _checks.SSLRobustValueError(
                f"the batch has no {target!r} target: its keys are {keys}; this loop needs "
                f"{needed} (check the task of the head, or the dataset's targets)"
            )
        images = batch["image"]
        tgt = None if target is None else batch[target]
    elif isinstance(batch, (tuple, list)):
        if not batch:
            raise _checks.SSLRobustValueError(f"{where} yielded an empty {type(batch).__name__}")
        if target is not None and len(batch) < 2:
            raise _checks.SSLRobustValueError(
                f"{where} yielded a {type(batch).__name__} of {len(batch)} item(s); a "
                f"{target!r} target is needed: yield (images, target) pairs"
            )
        images = batch[0]
        tgt = None if target is None else batch[1]
    elif isinstance(batch, Tensor):
        if target is not None:
            raise _checks.SSLRobustValueError(
                f"{where} yielded bare images (B, C, H, W) but a {target!r} target is needed: "
                "yield (images, target) pairs or Sample dicts"
            )
        images, tgt = batch, None
    else:
        raise _checks.SSLRobustTypeError(
            f"{where} must yield dict batches (collated Sample dicts), (images, target) pairs "
            f"or image tensors; got {type(batch).__name__}"
        )
    if not isinstance(images, Tensor):
        raise _checks.SSLRobustTypeError(
            f"the images of a batch from {where} must be a tensor (B, C, H, W); got "
            f"{type(images).__name__}"
        )
    return images, tgt
