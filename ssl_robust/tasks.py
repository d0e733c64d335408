"""One description per downstream task: classification, segmentation, depth.

Everything that differs between the tasks lives here, in one :class:`TaskSpec` each, and the
rest of the package looks it up (:func:`get_task`) instead of branching on task names: the
target a sample carries, the tokens EmbedAttack perturbs, the linear head, the task-specific
attack, the metric and its direction, the training loss ``fit`` minimizes, the per-sample
damage an attack ensemble compares, and the labels of the report.

Example:
    >>> import torch
    >>> from ssl_robust.data import DatasetInfo
    >>> spec = get_task("segmentation")
    >>> spec.target_key, spec.tokens, spec.metric_key, spec.higher_is_better
    ('mask', 'patch', 'miou', True)
    >>> info = DatasetInfo(name="toy", tasks=("segmentation",), seg_classes=3)
    >>> type(spec.make_head(16, info)).__name__
    'LinearSegmenter'
    >>> try:
    ...     get_task("detection")
    ... except ValueError as err:
    ...     print(err)
    unknown task 'detection'; valid tasks are: classification, segmentation, depth
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _checks
from .adaptors.base import Adaptor
from .adaptors.classification import LinearClassifier
from .adaptors.depth import LinearDepther, feature_view
from .adaptors.segmentation import LinearSegmenter
from .attacks import PGD, Attack, DepthPGD, Ensemble, SegPGD, strong_attack
from .data.base import DatasetInfo, Task
from .encoders import Encoder
from .losses import depth_loss
from .metrics import Accuracy, DepthMetrics, MeanIoU, Metric

__all__ = ["TASKS", "TaskName", "TaskSpec", "check_head_classes", "get_task", "list_tasks"]

#: The task names as a type (the same Literal as :data:`ssl_robust.data.Task`).
TaskName = Task
Tokens = Literal["cls", "patch"]


@dataclass(frozen=True)
class TaskSpec:
    """Everything task-specific, in one place (looked up with :func:`get_task`).

    Attributes:
        name: the task name.
        target_key: key of the target in a :class:`~ssl_robust.data.Sample` (``label``,
            ``mask``, ``depth``); the second item of ``(image, target)`` tuples.
        tokens: tokens EmbedAttack perturbs for this task (``cls`` or ``patch``).
        dense: targets are per-pixel maps (flipped and cropped with the images).
        metric_key: the headline metric's key in results (``accuracy``, ``miou``, ``rmse``).
        metric_label: its display name in table headers and figures.
        metric_text: its name in running text.
        higher_is_better: direction of the headline metric.
        attack_label: display name of the task-specific attack.
        table: the paper's table number of the task.
        make_head: ``(embed_dim, info, **options) -> Adaptor``, the paper's linear head
            (``options``: further keywords of the head, e.g. ``bins`` for depth).
        make_attack: ``(model, info, *, success_threshold=None, **attack options) -> Attack``,
            the paper's task attack (``success_threshold`` is used where the attack has one:
            SegPGD's share of correct pixels; None keeps its default).
        make_metric: ``(info) -> Metric``, a fresh metric.
        headline: the headline float from the metric's ``compute()`` value.
        loss: ``(output, target, head, ignore_index) -> scalar``, the head-training loss.
        check_target: ``(target, images, head, ignore_index) -> Tensor``, checks a batch
            target against the images and the head (shapes, ranges) and returns it.
        sample_metric: ``(pred, target, info) -> (B,)`` per-sample quality: correct (1/0),
            pixel accuracy on valid pixels, RMSE on valid pixels.
        damage: ``(pred, target, info) -> (B,)`` per-sample damage, larger is worse for the
            model: misclassified (1/0), 1 − pixel accuracy, RMSE (for attack ensembles).
        predicted: ``(pred) -> Tensor``, the prediction shown in galleries (labels or depth).
        head_info: ``(head) -> DatasetInfo``, the dataset facts a trained head carries
            (classes, depth range), for metrics and attacks when no dataset info is given.
        make_strong_attack: ``(model, info, **options) -> Ensemble``, the reliable worst-case
            evaluation of the task (:func:`~ssl_robust.attacks.strong_attack`, given the
            dataset's ignore index or depth range).
        encoder_view: ``(encoder) -> Encoder``, the tokens the paper's linear head reads:
            the encoder itself, or for depth the last block's tokens without the final
            LayerNorm (DINOv2's linear depth protocol: ``get_intermediate_layers(n=[last],
            return_class_token=True, norm=False)``), a view sharing the weights; encoders
            without that option are returned as they are.
    """

    name: TaskName
    target_key: str
    tokens: Tokens
    dense: bool
    metric_key: str
    metric_label: str
    metric_text: str
    higher_is_better: bool
    attack_label: str
    table: int
    make_head: Callable[..., Adaptor]
    make_attack: Callable[..., Attack]
    make_metric: Callable[[DatasetInfo], Metric[Any]]
    headline: Callable[[Any], float]
    loss: Callable[[Tensor, Tensor, nn.Module, int], Tensor]
    check_target: Callable[[Any, Tensor, nn.Module, int], Tensor]
    sample_metric: Callable[[Tensor, Tensor, DatasetInfo], Tensor]
    damage: Callable[[Tensor, Tensor, DatasetInfo], Tensor]
    predicted: Callable[[Tensor], Tensor]
    head_info: Callable[[nn.Module], DatasetInfo]
    make_strong_attack: Callable[..., Ensemble]
    encoder_view: Callable[[Encoder], Encoder] = lambda encoder: encoder

    @property
    def arrow(self) -> str:
        """``"↑"`` when higher is better, ``"↓"`` otherwise."""
        return "↑" if self.higher_is_better else "↓"

    def __repr__(self) -> str:
        return f"TaskSpec({self.name!r})"


# ----------------------------------------------------------------------------- helpers
def _classes(head: nn.Module) -> int:
    return int(getattr(head, "num_classes", 1 << 62))


def _info(name: str, head: nn.Module, **facts: Any) -> DatasetInfo:
    return DatasetInfo(name=getattr(head, "task", name), tasks=(name,), **facts)  # type: ignore[arg-type]


def _unnormed_last_block(encoder: Encoder) -> Encoder:
    if not hasattr(encoder, "output_norm"):
        return encoder
    return feature_view(encoder, output_layer=-1, output_norm=False)


def _dense_target(target: Tensor) -> Tensor:
    return target[:, 0] if target.ndim == 4 else target


def _depth_mask(target: Tensor, lo: float, hi: float) -> Tensor:
    return (target > lo) & (target <= hi)


# ----------------------------------------------------------------------------- classification
def _cls_loss(out: Tensor, target: Tensor, head: nn.Module, ignore_index: int) -> Tensor:
    return F.cross_entropy(out.float(), target)


def _cls_check(target: Any, images: Tensor, head: nn.Module, ignore_index: int) -> Tensor:
    labels = _checks.check_labels(target, batch=images.shape[0], name="target")
    _checks.check_label_range(labels, _classes(head))
    return labels


def _cls_sample(pred: Tensor, target: Tensor, info: DatasetInfo) -> Tensor:
    labels = pred.argmax(1) if pred.ndim == 2 else pred
    return (labels == target.to(labels.device)).float()


def _cls_damage(pred: Tensor, target: Tensor, info: DatasetInfo) -> Tensor:
    return 1.0 - _cls_sample(pred, target, info)


# ----------------------------------------------------------------------------- segmentation
def _seg_loss(out: Tensor, target: Tensor, head: nn.Module, ignore_index: int) -> Tensor:
    valid = target != ignore_index
    ce = F.cross_entropy(out.float(), target.masked_fill(~valid, 0), reduction="none")
    return (ce * valid).sum() / valid.sum().clamp_min(1)


def _seg_check(target: Any, images: Tensor, head: nn.Module, ignore_index: int) -> Tensor:
    size = (int(images.shape[2]), int(images.shape[3]))
    masks = _checks.check_masks(target, batch=images.shape[0], size=size, name="target")
    valid = masks[masks != ignore_index]
    classes = _classes(head)
    if valid.numel() and int(valid.min()) >= 0 and int(valid.max()) >= classes:
        raise _checks.SSLRobustValueError(
            f"{type(head).__name__} has {classes} classes but the masks hold label "
            f"{int(valid.max())}; for segmentation use `info.seg_classes` (the mask classes, "
            f"background included), not `info.num_classes` (the image labels); pixels to skip "
            f"must hold the ignore_index {ignore_index}"
        )
    _checks.check_mask_range(masks, classes, ignore_index=ignore_index, name="target")
    return masks


def _seg_sample(pred: Tensor, target: Tensor, info: DatasetInfo) -> Tensor:
    labels = pred.argmax(1) if pred.ndim == 4 else pred
    target = _dense_target(target).to(labels.device)
    valid = target != info.ignore_index
    correct = ((labels == target) & valid).flatten(1).sum(1)
    return correct.float() / valid.flatten(1).sum(1).clamp_min(1).float()


def _seg_damage(pred: Tensor, target: Tensor, info: DatasetInfo) -> Tensor:
    return 1.0 - _seg_sample(pred, target, info)


# ----------------------------------------------------------------------------- depth
def _depth_loss(out: Tensor, target: Tensor, head: nn.Module, ignore_index: int) -> Tensor:
    lo = float(getattr(head, "min_depth", 0.0))
    hi = float(getattr(head, "max_depth", float("inf")))
    pred = _dense_target(out)
    return depth_loss(pred, target, _depth_mask(target, lo, hi)).mean()


def _depth_check(target: Any, images: Tensor, head: nn.Module, ignore_index: int) -> Tensor:
    size = (int(images.shape[2]), int(images.shape[3]))
    return _checks.check_depth_map(target, batch=images.shape[0], size=size, name="target")


def _argmax_classes(pred: Tensor) -> Tensor:
    """Class per sample (B, C) or per pixel (B, C, H, W): the argmax over dimension 1."""
    return pred.argmax(1)


def _depth_rmse(pred: Tensor, target: Tensor, info: DatasetInfo) -> Tensor:
    p = _dense_target(pred).double()
    t = _dense_target(target).to(p.device).double()
    m = _depth_mask(t, info.min_depth, info.max_depth)
    err = torch.where(m, p - t, torch.zeros_like(p)).pow(2).flatten(1).sum(1)
    return (err / m.flatten(1).sum(1).clamp_min(1)).sqrt().float()


# ----------------------------------------------------------------------------- the registry
_TASKS: dict[str, TaskSpec] = {
    "classification": TaskSpec(
        name="classification",
        target_key="label",
        tokens="cls",
        dense=False,
        metric_key="accuracy",
        metric_label="Accuracy",
        metric_text="accuracy",
        higher_is_better=True,
        attack_label="PGD",
        table=1,
        make_head=lambda dim, info, **kw: LinearClassifier(dim, info.num_classes, **kw),
        make_attack=lambda model, info, success_threshold=None, **opts: PGD(
            model, early_stop=True, **opts
        ),
        make_metric=lambda info: Accuracy(),
        headline=float,
        loss=_cls_loss,
        check_target=_cls_check,
        sample_metric=_cls_sample,
        damage=_cls_damage,
        predicted=_argmax_classes,
        head_info=lambda head: _info("classification", head, num_classes=_classes(head)),
        make_strong_attack=lambda model, info, **kw: strong_attack(
            model, task="classification", **kw
        ),
    ),
    "segmentation": TaskSpec(
        name="segmentation",
        target_key="mask",
        tokens="patch",
        dense=True,
        metric_key="miou",
        metric_label="mIoU",
        metric_text="mIoU",
        higher_is_better=True,
        attack_label="SegPGD",
        table=2,
        make_head=lambda dim, info, **kw: LinearSegmenter(dim, info.seg_classes, **kw),
        make_attack=lambda model, info, success_threshold=None, **opts: SegPGD(
            model,
            ignore_index=info.ignore_index,
            early_stop=True,
            **({} if success_threshold is None else {"success_threshold": success_threshold}),
            **opts,
        ),
        make_metric=lambda info: MeanIoU(info.seg_classes, ignore_index=info.ignore_index),
        headline=float,
        loss=_seg_loss,
        check_target=_seg_check,
        sample_metric=_seg_sample,
        damage=_seg_damage,
        predicted=_argmax_classes,
        head_info=lambda head: _info("segmentation", head, seg_classes=_classes(head)),
        make_strong_attack=lambda model, info, **kw: strong_attack(
            model, task="segmentation", ignore_index=info.ignore_index, **kw
        ),
    ),
    "depth": TaskSpec(
        name="depth",
        target_key="depth",
        tokens="patch",
        dense=True,
        metric_key="rmse",
        metric_label="RMSE",
        metric_text="RMSE",
        higher_is_better=False,
        attack_label="DepthPGD",
        table=3,
        make_head=lambda dim, info, **kw: LinearDepther(
            dim, min_depth=info.min_depth, max_depth=info.max_depth, **kw
        ),
        make_attack=lambda model, info, success_threshold=None, **opts: DepthPGD(
            model, min_depth=info.min_depth, max_depth=info.max_depth, **opts
        ),
        make_metric=lambda info: DepthMetrics(min_depth=info.min_depth, max_depth=info.max_depth),
        headline=lambda value: float(value["rmse"]),
        loss=_depth_loss,
        check_target=_depth_check,
        sample_metric=_depth_rmse,
        damage=_depth_rmse,
        predicted=_dense_target,
        head_info=lambda head: _info(
            "depth",
            head,
            min_depth=float(getattr(head, "min_depth", 1e-3)),
            max_depth=float(getattr(head, "max_depth", 10.0)),
        ),
        make_strong_attack=lambda model, info, **kw: strong_attack(
            model, task="depth", min_depth=info.min_depth, max_depth=info.max_depth, **kw
        ),
        encoder_view=_unnormed_last_block,
    ),
}

#: The task names, in the paper's table order.
TASKS: tuple[str, ...] = tuple(_TASKS)


def list_tasks() -> list[str]:
    """The registered task names, in the paper's table order.

    Example:
        >>> list_tasks()
        ['classification', 'segmentation', 'depth']
    """
    return list(_TASKS)


def get_task(name: str) -> TaskSpec:
    """The :class:`TaskSpec` of ``name``.

    Raises:
        SSLRobustValueError: unknown task, listing the valid names.
    """
    spec = _TASKS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise _checks.SSLRobustValueError(
            f"unknown task {name!r}; valid tasks are: {', '.join(_TASKS)}"
        )
    return spec


def check_head_classes(head: nn.Module, data: object, *, task: str | None = None) -> None:
    """Refuse a head with fewer classes than a dataset declares, naming the ``info`` field to
    build it from (``num_classes`` for image labels, ``seg_classes`` for mask labels).

    Args:
        head: the adaptor (its ``num_classes``; heads without one pass).
        data: a :class:`~ssl_robust.data.DatasetInfo`, a dataset or a DataLoader (its
            ``info`` is found through subset wrappers); data that does not describe itself
            passes.
        task: the head's task (default: ``head.task``).

    Raises:
        SSLRobustValueError: e.g. ``LinearSegmenter has 4 classes but the masks of 'shapes'
            hold labels up to 4 (`info.seg_classes` = 5); for segmentation use
            `info.seg_classes```.

    Example:
        >>> from ssl_robust.data import DatasetInfo
        >>> info = DatasetInfo(name="toy", tasks=("segmentation",), num_classes=4, seg_classes=5)
        >>> check_head_classes(LinearSegmenter(8, 5), info)
        >>> try:
        ...     check_head_classes(LinearSegmenter(8, 4), info)
        ... except ValueError as err:
        ...     print(str(err).split(";")[1])
         for segmentation use `info.seg_classes`
    """
    info = data
    for _ in range(8):  # a DataLoader, then Subset / IndexedSubset wrappers
        if isinstance(info, DatasetInfo) or not hasattr(info, "dataset"):
            break
        info = getattr(info, "info", None) or info.dataset
    info = getattr(info, "info", info)
    if not isinstance(info, DatasetInfo):
        return
    spec = get_task(task if task is not None else getattr(head, "task", ""))
    facts = spec.head_info(head)
    for key in ("num_classes", "seg_classes"):
        have, need = int(getattr(facts, key)), int(getattr(info, key))
        if 0 < have < need:
            raise _checks.SSLRobustValueError(
                f"{type(head).__name__} has {have} classes but the {spec.target_key}s of "
                f"{info.name!r} hold labels up to {need - 1} (`info.{key}` = {need}); for "
                f"{spec.name} use `info.{key}`"
            )
