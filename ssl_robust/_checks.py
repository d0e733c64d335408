"""Input validation: the one place where ssl_robust checks what users pass in.

Every error raised here subclasses :class:`ValueError` or :class:`TypeError` (so ``except
ValueError`` keeps working) and says what was expected, what came, and, for the classic mistakes,
a hint. Checks are raised once, at the public entry point.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "SSLRobustRuntimeError",
    "SSLRobustTypeError",
    "SSLRobustValueError",
    "check_budget",
    "check_choice",
    "check_device",
    "check_finite_images",
    "check_generator",
    "check_ignore_index",
    "check_images",
    "check_int",
    "check_labels",
    "check_logits",
    "check_no_unknown",
    "check_positive_float",
    "check_tasks_present",
    "inner_module",
    "input_checks",
    "input_checks_enabled",
    "set_input_checks",
    "unwrap_distributed",
]


class SSLRobustValueError(ValueError):
    """A value has the right type but an invalid content (range, shape, option)."""


class SSLRobustTypeError(TypeError):
    """A value has the wrong type (or dtype)."""


class SSLRobustRuntimeError(RuntimeError):
    """A call cannot work in the state it was made in (e.g. no gradient reaches the input)."""


# --- the switch for per-forward value checks (finite, in [0, 1]) ---
# Value checks cost one host sync each. They run once per public call; inside an attack's loop
# and inside torch.compile they are skipped, and users may turn them off globally.
_GLOBAL_INPUT_CHECKS = [True]
_SCOPED_INPUT_CHECKS: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "ssl_robust_input_checks", default=True
)


def set_input_checks(enabled: bool) -> None:
    """Turn the value checks of images (finite, in [0, 1]) on or off for the whole process.

    The checks cost one host-device synchronisation per call. They run once per attack call (not
    per step) and never inside ``torch.compile``; turn them off when even that matters (e.g. in a
    tight CUDA loop whose inputs you have validated). Type and shape checks always run.

    Example:
        >>> import ssl_robust
        >>> ssl_robust.set_input_checks(False)
        >>> ssl_robust.input_checks_enabled()
        False
        >>> ssl_robust.set_input_checks(True)
    """
    if not isinstance(enabled, bool):
        raise SSLRobustTypeError(f"enabled must be a bool; got {type(enabled).__name__}")
    _GLOBAL_INPUT_CHECKS[0] = enabled


def input_checks_enabled() -> bool:
    """Whether image value checks run here (global switch, attack scope, torch.compile)."""
    if torch.compiler.is_compiling():
        return False
    return _GLOBAL_INPUT_CHECKS[0] and _SCOPED_INPUT_CHECKS.get()


@contextlib.contextmanager
def input_checks(enabled: bool) -> Iterator[None]:
    """Turn the image value checks on or off inside a ``with`` block (this thread/task only).

    The attacks use ``input_checks(False)`` around their loop after checking the images once.
    """
    token = _SCOPED_INPUT_CHECKS.set(bool(enabled))
    try:
        yield
    finally:
        _SCOPED_INPUT_CHECKS.reset(token)


# --- models as users pass them (compiled, DDP/DataParallel-wrapped) ---
def inner_module(model: Any) -> Any:
    """The module under ``torch.compile`` and ``DistributedDataParallel``/``DataParallel``.

    Type checks (``isinstance(model, Encoder)``) look at this; the wrapper itself keeps
    running the forward.
    """
    seen = 0
    while seen < 8:
        seen += 1
        orig = getattr(model, "_orig_mod", None)
        if isinstance(model, torch.nn.Module) and isinstance(orig, torch.nn.Module):
            model = orig  # torch.compile's OptimizedModule
        elif isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        else:
            break
    return model


def unwrap_distributed(model: Any) -> Any:
    """``model`` without a ``DistributedDataParallel`` wrapper (kept as is otherwise).

    An attack needs no gradient synchronisation, and DDP's forward would run collectives
    (buffer broadcasts) whose count differs between ranks once samples stop early: attacks
    run the wrapped module directly.
    """
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return model.module
    return model


def check_device(model: object, images: Tensor, *, what: str = "the model") -> None:
    """Check that the parameters (else buffers) of an ``nn.Module`` live on the images' device.

    DataParallel scatters its inputs itself and is not checked; callables are not checked.
    """
    if not isinstance(model, torch.nn.Module) or isinstance(model, torch.nn.DataParallel):
        return
    tensor: Tensor | None = next(model.parameters(), None)
    if tensor is None:
        tensor = next(model.buffers(), None)
    if tensor is None or tensor.device == images.device:
        return
    raise SSLRobustValueError(
        f"{what} is on {tensor.device} but the images are on {images.device}; move one of "
        f"them, e.g. images.to({str(tensor.device)!r}) or model.to({str(images.device)!r})"
    )


# Names used by other attack libraries, mapped to ours, for the "unknown keyword" hint.
_ALIASES: dict[str, str] = {
    "alpha": "step_size",
    "epsilon": "eps",
    "nb_iter": "steps",
    "num_steps": "steps",
    "iters": "steps",
    "n_iter": "steps",
    "max_iter": "steps",
    "rand_init": "random_start",
    "random_init": "random_start",
    "eps_step": "step_size",
    "eps_iter": "step_size",
    "rel_stepsize": "step_size",
    "abs_stepsize": "step_size",
    "seed": "generator",
}


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return repr(value)


def check_tasks_present(needed: Iterable[str], info: Any, *, dataset: str) -> None:
    """Refuse a dataset whose samples lack the targets of tasks that need them.

    ``info`` is the dataset's :class:`~ssl_robust.data.DatasetInfo` (its ``tasks``).

    Example:
        >>> from ssl_robust.data import DatasetInfo
        >>> info = DatasetInfo(name="toy", tasks=("classification",))
        >>> check_tasks_present(["classification"], info, dataset="'toy'")
        >>> try:
        ...     check_tasks_present(["classification", "depth"], info, dataset="'toy'")
        ... except ValueError as err:
        ...     print(err)
        dataset 'toy' has no ['depth'] targets; it supports ['classification']
    """
    missing = [t for t in needed if t not in info.tasks]
    if missing:
        raise SSLRobustValueError(
            f"dataset {dataset} has no {missing} targets; it supports {list(info.tasks)}"
        )


def check_no_unknown(unknown: Mapping[str, Any], allowed: Iterable[str], *, where: str) -> None:
    """Reject unknown keyword arguments with the list of valid ones and a hint for aliases.

    Raises:
        SSLRobustTypeError: if ``unknown`` is not empty.
    """
    if not unknown:
        return
    allowed = sorted(allowed)
    name = sorted(unknown)[0]
    hint = ""
    if name in _ALIASES and _ALIASES[name] in allowed:
        hint = f" — did you mean {_ALIASES[name]}=? ({name} is another library's name for it)"
    else:
        close = difflib.get_close_matches(name, allowed, n=1)
        if close:
            hint = f" — did you mean {close[0]}=?"
    raise SSLRobustTypeError(
        f"{where} got an unexpected keyword argument {name!r}{hint}; "
        f"expected one of: {', '.join(allowed)}"
    )


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """Check that ``value`` is one of the allowed string ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise SSLRobustValueError(
            f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {_fmt(value)}"
        )
    return value


def check_int(name: str, value: object, *, minimum: int = 0) -> int:
    """Check an integer option (bools are refused) with a lower bound."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise SSLRobustTypeError(
            f"{name} must be an int >= {minimum}; got {type(value).__name__} {_fmt(value)}"
        )
    if value < minimum:
        raise SSLRobustValueError(f"{name} must be >= {minimum}; got {value}")
    return value


def check_loss_fns(loss_fn: object) -> list[Any]:
    """A loss callback, or a non-empty sequence of them, as a list of callbacks."""
    fns = [loss_fn] if callable(loss_fn) else loss_fn
    if not isinstance(fns, (list, tuple)) or not fns or not all(callable(f) for f in fns):
        raise SSLRobustTypeError(
            "loss_fn must be a callable loss_fn(x_active, active_idx, step) or a non-empty "
            f"sequence of them; got {type(loss_fn).__name__}"
        )
    return list(fns)


def check_positive_float(name: str, value: object, *, allow_zero: bool = False) -> float:
    """Check a finite float option that is > 0 (or >= 0 with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SSLRobustTypeError(
            f"{name} must be a float; got {type(value).__name__} {_fmt(value)}"
        )
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise SSLRobustValueError(f"{name} must be a finite float {bound}; got {_fmt(value)}")
    return value


def check_budget(name: str, value: object, *, norm: str, allow_zero: bool = True) -> float:
    """Check an attack budget (eps or step size), which lives on the [0, 1] image scale.

    An Linf budget above 1 is always a mistake (the whole image range is 1): most often eps was
    given on the 0–255 scale, so the error suggests the fraction.
    """
    value = check_positive_float(name, value, allow_zero=allow_zero)
    if norm == "linf" and value > 1.0:
        raise SSLRobustValueError(
            f"{name} must be on the [0, 1] image scale for norm='linf' (at most 1); got "
            f"{_fmt(value)} — did you mean {_fmt(value)}/255 = {value / 255:.6g}?"
        )
    return value


def check_generator(generator: object) -> torch.Generator | None:
    """Check that ``generator`` is a :class:`torch.Generator` or None."""
    if generator is not None and not isinstance(generator, torch.Generator):
        hint = (
            " — pass torch.Generator().manual_seed(seed) instead of a seed"
            if isinstance(generator, int)
            else ""
        )
        raise SSLRobustTypeError(
            f"generator must be a torch.Generator or None; got {type(generator).__name__}{hint}"
        )
    return generator


def check_images(images: object, *, name: str = "images", channels: int | None = None) -> Tensor:
    """Check an image batch: a float tensor of shape (B, C, H, W) with values in [0, 1].

    A tolerance of a few units in the last place is allowed at both ends so that ``x + delta``
    computed in floating point passes. NaN is refused.
    """
    check_image_tensor(images, name=name, channels=channels)
    assert isinstance(images, Tensor)
    check_finite_images(images, name=name)
    return images


def check_image_tensor(
    images: object, *, name: str = "images", channels: int | None = None
) -> Tensor:
    """Check type, dtype and shape of an image batch, without looking at its values (no sync)."""
    if not isinstance(images, Tensor):
        raise SSLRobustTypeError(
            f"{name} must be a torch.Tensor of shape (B, C, H, W); got {type(images).__name__}"
        )
    if not images.is_floating_point():
        hint = (
            " — convert uint8 images with images.float() / 255"
            if images.dtype == torch.uint8
            else ""
        )
        raise SSLRobustTypeError(
            f"{name} must be a floating-point tensor with values in [0, 1]; got dtype "
            f"{images.dtype}{hint}"
        )
    if images.ndim != 4:
        hint = " — add a batch dimension with images.unsqueeze(0)" if images.ndim == 3 else ""
        raise SSLRobustValueError(
            f"{name} must have 4 dimensions (B, C, H, W); got {images.ndim} dimensions with "
            f"shape {tuple(images.shape)}{hint}"
        )
    if channels is not None and images.shape[1] != channels:
        hint = (
            " — channels-last input? use images.permute(0, 3, 1, 2)"
            if images.shape[-1] == channels
            else ""
        )
        raise SSLRobustValueError(
            f"{name} must have {channels} channels (B, {channels}, H, W); got shape "
            f"{tuple(images.shape)}{hint}"
        )
    return images


def check_finite_images(images: Tensor, *, name: str = "images") -> None:
    """Check that the values of an image batch are finite and lie in [0, 1] (one host sync).

    Skipped where :func:`input_checks_enabled` is False (inside an attack's loop, under
    ``torch.compile``, or after ``set_input_checks(False)``).
    """
    if images.numel() == 0 or not input_checks_enabled():
        return
    lo, hi = torch.aminmax(images.detach())
    lo_v, hi_v = float(lo), float(hi)
    if math.isnan(lo_v) or math.isnan(hi_v):
        raise SSLRobustValueError(f"{name} contain NaN; expected finite values in [0, 1]")
    tol = 4 * torch.finfo(images.dtype).eps
    if lo_v < -tol or hi_v > 1 + tol:
        if lo_v < 0:
            hint = (
                " — did you pass normalized images? Normalization belongs to the Encoder, "
                "pass images in [0, 1]"
            )
        elif hi_v > 1.5:
            hint = " — did you pass 0–255 images? divide by 255"
        else:
            hint = ""
        raise SSLRobustValueError(
            f"{name} must be in [0, 1]; got min={lo_v:.4g} max={hi_v:.4g}{hint}"
        )


def _ndim(value: object) -> int:
    return value.ndim if isinstance(value, Tensor) else -1


def _class_index_tensor(value: object, *, name: str, layout: str, hint: str) -> Tensor:
    """A tensor of integer class indices (labels or masks), or a typed error."""
    if not isinstance(value, Tensor):
        raise SSLRobustTypeError(
            f"{name} must be a torch.Tensor of shape {layout} with integer class indices; "
            f"got {type(value).__name__}"
        )
    if value.is_floating_point() or value.dtype == torch.bool or value.is_complex():
        raise SSLRobustTypeError(
            f"{name} must hold integer class indices (int64); got dtype {value.dtype}{hint}"
        )
    return value


def check_labels(
    labels: object,
    *,
    batch: int,
    num_classes: int | None = None,
    name: str = "labels",
    device: torch.device | None = None,
) -> Tensor:
    """Check class labels: an integer tensor of shape (B,) with values in [0, num_classes).

    Returns:
        The labels as int64 on ``device`` (when given).
    """
    hint = " — one-hot or probabilities? pass labels.argmax(1)"
    labels = _class_index_tensor(
        labels, name=name, layout=f"({batch},)", hint=hint if _ndim(labels) == 2 else ""
    )
    if labels.ndim != 1 or labels.shape[0] != batch:
        raise SSLRobustValueError(
            f"{name} must have shape ({batch},) to match the batch of images; got shape "
            f"{tuple(labels.shape)}"
        )
    if num_classes is not None:
        check_label_range(labels, num_classes, name=name)
    labels = labels.long()
    return labels if device is None else labels.to(device)


def check_label_range(labels: Tensor, num_classes: int, *, name: str = "labels") -> None:
    """Check that every label lies in [0, num_classes) (one host sync)."""
    if labels.numel() == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise SSLRobustValueError(
            f"{name} must be in [0, {num_classes - 1}] for a model with {num_classes} classes; "
            f"got min={lo} max={hi}"
        )


# --- dense tasks (segmentation, depth) ---


def _shape(value: object) -> str:
    return str(tuple(value.shape)) if isinstance(value, Tensor) else type(value).__name__


def check_ignore_index(value: object) -> int:
    """The label of unlabelled pixels: any int (255 in our datasets, -100 in PyTorch's losses)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise SSLRobustTypeError(f"ignore_index must be an int; got {value!r}")
    return value


def check_logits(logits: object, *, dense: bool, name: str = "logits") -> Tensor:
    """A float tensor of logits: (B, C), or (B, C, H, W) when ``dense``."""
    ndim, layout = (4, "(B, C, H, W)") if dense else (2, "(B, C)")
    if not isinstance(logits, Tensor) or logits.ndim != ndim or not logits.is_floating_point():
        raise SSLRobustValueError(f"{name} must be a float tensor {layout}; got {_shape(logits)}")
    return logits


def check_masks(
    masks: object,
    *,
    batch: int | None = None,
    size: tuple[int, int] | None = None,
    name: str = "masks",
    device: torch.device | None = None,
) -> Tensor:
    """Check segmentation masks: an integer tensor (B, H, W) matching the images.

    Returns:
        The masks as int64 on ``device`` (when given).
    """
    masks = _class_index_tensor(
        masks,
        name=name,
        layout="(B, H, W)",
        hint=" — convert float masks with masks.long() (after checking they hold whole numbers)",
    )
    if masks.ndim == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.ndim != 3:
        raise SSLRobustValueError(
            f"{name} must have shape (B, H, W); got {masks.ndim} dimensions with shape "
            f"{tuple(masks.shape)}"
        )
    expected = (batch if batch is not None else masks.shape[0], *(size or masks.shape[1:]))
    if tuple(masks.shape) != tuple(expected):
        raise SSLRobustValueError(
            f"{name} must have shape {tuple(expected)} to match the images (B, H, W); got "
            f"{tuple(masks.shape)}"
        )
    masks = masks.long()
    return masks if device is None else masks.to(device)


def check_mask_range(
    masks: Tensor, num_classes: int, *, ignore_index: int | None, name: str = "masks"
) -> None:
    """Check that every label is in [0, num_classes) or equal to ``ignore_index`` (one sync)."""
    valid = masks if ignore_index is None else masks[masks != ignore_index]
    if valid.numel() == 0:
        return
    lo, hi = int(valid.min()), int(valid.max())
    if lo < 0 or hi >= num_classes:
        raise SSLRobustValueError(
            f"{name} must hold labels in [0, {num_classes - 1}] or the ignore_index "
            f"{ignore_index}; got min={lo} max={hi} among the non-ignored pixels"
        )


def check_depth_map(
    depth: object,
    *,
    batch: int | None = None,
    size: tuple[int, int] | None = None,
    name: str = "depth",
    check_negative: bool = True,
) -> Tensor:
    """Check a depth map (B, H, W) or (B, 1, H, W), float, not negative.

    Returns:
        The depth as (B, H, W) (a view).
    """
    if not isinstance(depth, Tensor):
        raise SSLRobustTypeError(
            f"{name} must be a torch.Tensor of shape (B, H, W) or (B, 1, H, W); got "
            f"{type(depth).__name__}"
        )
    if not depth.is_floating_point():
        raise SSLRobustTypeError(f"{name} must be a floating-point tensor; got {depth.dtype}")
    if depth.ndim == 4 and depth.shape[1] == 1:
        depth = depth[:, 0]
    if depth.ndim != 3:
        raise SSLRobustValueError(
            f"{name} must have shape (B, H, W) or (B, 1, H, W); got {tuple(depth.shape)}"
        )
    expected = (batch if batch is not None else depth.shape[0], *(size or depth.shape[1:]))
    if tuple(depth.shape) != tuple(expected):
        raise SSLRobustValueError(
            f"{name} must have shape {tuple(expected)} (B, H, W) to match; got {tuple(depth.shape)}"
        )
    if check_negative and depth.numel() and bool((depth < 0).any()):
        raise SSLRobustValueError(
            f"{name} must not be negative (metres; use 0 for missing pixels); got "
            f"min={float(depth.min()):.4g}"
        )
    return depth


def check_depth_range(min_depth: object, max_depth: object) -> tuple[float, float]:
    """Check ``0 <= min_depth < max_depth`` (finite)."""
    lo = check_positive_float("min_depth", min_depth, allow_zero=True)
    hi = check_positive_float("max_depth", max_depth)
    if lo >= hi:
        raise SSLRobustValueError(
            f"min_depth must be smaller than max_depth; got min_depth={lo:.6g}, max_depth={hi:.6g}"
        )
    return lo, hi


def check_pair(name: str, value: object, *, minimum: int = 1) -> tuple[int, int]:
    """An int or a pair of ints (height, width), each >= ``minimum``."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise SSLRobustValueError(f"{name} must be an int or (height, width); got {value!r}")
        first = check_int(name, value[0], minimum=minimum)
        return first, check_int(name, value[1], minimum=minimum)
    v = check_int(name, value, minimum=minimum)
    return v, v
