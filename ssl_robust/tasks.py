"""One description per downstream task, open to other packages: :class:`TaskSpec`.

Everything that differs between the tasks lives here, in one :class:`TaskSpec` each, and the
rest of the package looks it up (:func:`get_task`) instead of branching on task names: the
target a sample carries, the tokens EmbedAttack perturbs, the linear head, the task-specific
attack, the metric and its direction, the per-sample loss, the per-sample damage an attack
ensemble compares, and the labels of the report.

The paper's tasks (classification, segmentation, depth) are registered with the same public
:func:`register_task` another package uses. A new task names its target key, head factory,
per-sample loss, metric and direction and whether it is per pixel; the rest is derived
(see :class:`TaskSpec`), so ``fit``, ``evaluate``, ``strong_attack`` and ``ssl-robust bench``
run it unchanged.

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
    ...     print(str(err).split(" (")[0])
    unknown task 'detection'; valid tasks are: classification, segmentation, depth
"""

from __future__ import annotations

import dataclasses
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
from .adaptors.training import PRESETS, FitPreset
from .attacks import PGD, Attack, DepthPGD, Ensemble, SegPGD, strong_attack
from .data.base import DatasetInfo, Task
from .encoders import Encoder
from .losses import depth_loss
from .metrics import Accuracy, DepthMetrics, MeanIoU, Metric
from .registry import Registry

__all__ = [
    "DEFAULT_FIT_PRESET",
    "TASKS",
    "TaskAttack",
    "TaskName",
    "TaskSpec",
    "check_head_classes",
    "check_task_name",
    "get_task",
    "list_tasks",
    "register_task",
    "table_number",
    "task_origin",
]

#: A task name (a plain string; the built-in names are ``"classification"``,
#: ``"segmentation"`` and ``"depth"``, and packages register more with :func:`register_task`).
TaskName = Task
Tokens = Literal["cls", "patch"]

#: Head-training settings of a registered task that gives none: AdamW, lr 1e-3, 10 epochs,
#: batch 32, no augmentation (flips and crops are only safe where the target follows them).
DEFAULT_FIT_PRESET = FitPreset("adamw", 1e-3, 0.0, 10, 32, False, False, False)


def _derive(*args: Any, **kwargs: Any) -> Any:  # sentinel: "derive this field"
    raise NotImplementedError  # pragma: no cover


_REQUIRED: Any = None


@dataclass(frozen=True)
class TaskSpec:
    """Everything task-specific, in one place (registered with :func:`register_task`, looked
    up with :func:`get_task`).

    Required (a task costs about 30 lines; the error of a missing field names it):

    Attributes:
        name: the task name.
        target_key: key of the target in a sample dict (``label``, ``mask``, ``depth``, or a
            new key such as ``normals``); the second item of ``(image, target)`` tuples.
        make_head: ``(embed_dim, info, **options) -> Adaptor``, the linear head; the head's
            ``task`` attribute must be ``name`` (``options``: head keywords from a config).
        loss: ``(output, target, info) -> (B,)``, the per-sample loss: what the task attack
            maximizes and, averaged, what ``fit`` minimizes.
        make_metric: ``(info) -> Metric``, a fresh metric (``update(output, target)``,
            ``compute()``).
        higher_is_better: direction of the headline metric.
        dense: outputs and targets are per pixel (flipped and cropped with the images).

    Derived when not given (each overridable):

    Attributes:
        headline: the headline float from ``compute()`` (default ``float``; give it when
            ``compute()`` returns a dict).
        tokens: tokens EmbedAttack perturbs: ``"patch"`` for dense tasks, else ``"cls"``.
        metric_key: the headline metric's key in results (default ``"metric"``).
        metric_label: its name in table headers and figures (default ``metric_key``).
        metric_text: its name in running text (default ``metric_label``).
        attack_label: display name of the task attack (default ``"TaskPGD"``).
        table: the table number in ``tables.md`` (default: after the paper's three, in
            registration order; see :func:`table_number`).
        success: ``(output, target, info) -> (B,) bool``, the per-sample success criterion
            (optional): the task attack stops early on samples that reached it, and an
            ensemble skips them.
        make_attack: ``(model, info, *, success_threshold=None, **attack options) -> Attack``;
            default: :class:`TaskAttack` (the shared PGD core on ``loss``, with early stop
            where ``success`` is given).
        train_loss: ``(output, target, info) -> scalar``, what ``fit`` minimizes (default:
            the mean of ``loss``).
        check_target: ``(target, images, head, ignore_index) -> Tensor``: checks a batch
            target (default: a tensor with the batch size, and for dense tasks the images'
            height and width as its last two dimensions).
        sample_metric: ``(pred, target, info) -> (B,)`` per-sample quality (default: the
            headline metric computed on each sample alone).
        damage: ``(pred, target, info) -> (B,)`` per-sample damage, larger is worse for the
            model (default: from ``sample_metric`` and the direction: ``-quality`` when higher
            is better, else ``quality``).
        predicted: ``(pred) -> Tensor``, the prediction kept for galleries (default: the
            output itself).
        head_info: ``(head) -> DatasetInfo``, the dataset facts a trained head carries
            (default: only the name and task).
        make_strong_attack: ``(model, info, **options) -> Ensemble``, the reliable worst case
            (default: :class:`TaskAttack` on the APGD schedule with 2 restarts, then the task
            attack; the per-sample worst by ``damage``).
        encoder_view: ``(encoder) -> Encoder``, the tokens the head reads (default: the
            encoder; depth: the last block without the final LayerNorm, DINOv2's linear depth
            protocol).
        fit_preset: the head-training settings of ``fit`` (:class:`~ssl_robust.adaptors.FitPreset`;
            default :data:`DEFAULT_FIT_PRESET`).

    Raises:
        SSLRobustTypeError: a required field missing (named) or of the wrong type.
        SSLRobustValueError: an empty name or target key, unknown tokens.

    Example:
        >>> import torch
        >>> from ssl_robust.adaptors import LinearClassifier
        >>> from ssl_robust.metrics import Accuracy
        >>> spec = TaskSpec(
        ...     name="toy_cls", target_key="label",
        ...     make_head=lambda dim, info, **kw: LinearClassifier(dim, info.num_classes),
        ...     loss=lambda out, y, info: torch.nn.functional.cross_entropy(
        ...         out, y, reduction="none"),
        ...     make_metric=lambda info: Accuracy(), higher_is_better=True, dense=False)
        >>> spec.tokens, spec.metric_label, spec.attack_label
        ('cls', 'metric', 'TaskPGD')
        >>> try:
        ...     TaskSpec(name="x", target_key="y")
        ... except TypeError as err:
        ...     print(str(err).split(":")[0])
        TaskSpec 'x' is missing the required field 'make_head'
    """

    name: str = _REQUIRED
    target_key: str = _REQUIRED
    make_head: Callable[..., Adaptor] = _REQUIRED
    loss: Callable[[Any, Any, DatasetInfo], Tensor] = _REQUIRED
    make_metric: Callable[[DatasetInfo], Metric[Any]] = _REQUIRED
    higher_is_better: bool = _REQUIRED
    dense: bool = _REQUIRED
    headline: Callable[[Any], float] = float
    tokens: Tokens = _REQUIRED
    metric_key: str = "metric"
    metric_label: str = ""
    metric_text: str = ""
    attack_label: str = "TaskPGD"
    table: int | None = None
    success: Callable[[Any, Any, DatasetInfo], Tensor] | None = None
    make_attack: Callable[..., Attack] = _derive
    train_loss: Callable[[Any, Any, DatasetInfo], Tensor] = _derive
    check_target: Callable[[Any, Tensor, nn.Module, int], Tensor] = _derive
    sample_metric: Callable[[Tensor, Tensor, DatasetInfo], Tensor] = _derive
    damage: Callable[[Tensor, Tensor, DatasetInfo], Tensor] = _derive
    predicted: Callable[[Tensor], Tensor] = _derive
    head_info: Callable[[nn.Module], DatasetInfo] = _derive
    make_strong_attack: Callable[..., Ensemble] = _derive
    encoder_view: Callable[[Encoder], Encoder] = _derive
    fit_preset: FitPreset = DEFAULT_FIT_PRESET

    def __post_init__(self) -> None:
        label = f"TaskSpec {self.name!r}" if isinstance(self.name, str) else "TaskSpec"
        for key in ("name", "target_key", "make_head", "loss", "make_metric"):
            if getattr(self, key) is None:
                raise _checks.SSLRobustTypeError(
                    f"{label} is missing the required field {key!r}: {_FIELD_HELP[key]}"
                )
        for key in ("higher_is_better", "dense"):
            value = getattr(self, key)
            if not isinstance(value, bool):
                raise _checks.SSLRobustTypeError(
                    f"{label} is missing the required field {key!r}: {_FIELD_HELP[key]}"
                    if value is None
                    else f"{label}: {key} must be True or False; got {value!r}"
                )
        for key in ("name", "target_key"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise _checks.SSLRobustValueError(
                    f"{label}: {key} must be a non-empty string; got {getattr(self, key)!r}"
                )
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in _CALLABLES and value is not None and not callable(value):
                raise _checks.SSLRobustTypeError(
                    f"{label}: {f.name} must be callable; got {type(value).__name__}"
                )
        if not isinstance(self.fit_preset, FitPreset):
            raise _checks.SSLRobustTypeError(
                f"{label}: fit_preset must be a FitPreset; got {type(self.fit_preset).__name__}"
            )
        derived: dict[str, Any] = {
            "tokens": self.tokens or ("patch" if self.dense else "cls"),
            "metric_label": self.metric_label or self.metric_key,
            "metric_text": self.metric_text or self.metric_label or self.metric_key,
        }
        _checks.check_choice(f"{label}: tokens", derived["tokens"], ("cls", "patch"))
        spec = self
        defaults: dict[str, Callable[..., Any]] = {
            "make_attack": lambda model, info, success_threshold=None, **opts: TaskAttack(
                model, spec=spec, info=info, early_stop=spec.success is not None, **opts
            ),
            "train_loss": lambda out, target, info: spec.loss(out, target, info).mean(),
            "check_target": lambda target, images, head, ignore_index: _generic_check(
                spec, target, images
            ),
            "sample_metric": lambda pred, target, info: _per_sample_headline(
                spec, pred, target, info
            ),
            "damage": lambda pred, target, info: _damage_from_direction(spec, pred, target, info),
            "predicted": lambda pred: pred,
            "head_info": lambda head: DatasetInfo(name=spec.name, tasks=(spec.name,)),
            "make_strong_attack": lambda model, info, **kw: _default_strong(
                spec, model, info, **kw
            ),
            "encoder_view": lambda encoder: encoder,
        }
        for key, make in defaults.items():
            current = getattr(self, key)
            if current is _derive or getattr(current, "_ssl_robust_derived", False):
                make._ssl_robust_derived = True  # type: ignore[attr-defined]
                derived[key] = make
        for key, value in derived.items():
            object.__setattr__(self, key, value)

    @property
    def arrow(self) -> str:
        """``"↑"`` when higher is better, ``"↓"`` otherwise."""
        return "↑" if self.higher_is_better else "↓"

    def __repr__(self) -> str:
        return f"TaskSpec({self.name!r})"


_FIELD_HELP = {
    "name": "the task's name (a string)",
    "target_key": "the key of the target in a sample dict, e.g. 'label' or 'normals'",
    "make_head": "(embed_dim, info, **options) -> Adaptor, the head factory",
    "loss": "(output, target, info) -> (B,), the per-sample loss",
    "make_metric": "(info) -> Metric, a fresh metric",
    "higher_is_better": "the direction of the headline metric (True or False)",
    "dense": "whether outputs and targets are per pixel (True or False)",
}
_CALLABLES = {
    "make_head", "loss", "make_metric", "headline", "success", "make_attack", "train_loss",
    "check_target", "sample_metric", "damage", "predicted", "head_info", "make_strong_attack",
    "encoder_view",
}  # fmt: skip


def _generic_check(spec: TaskSpec, target: Any, images: Tensor) -> Tensor:
    if not isinstance(target, Tensor):
        raise _checks.SSLRobustTypeError(
            f"{spec.name} targets must be tensors; got {type(target).__name__}"
        )
    if target.ndim == 0 or target.shape[0] != images.shape[0]:
        raise _checks.SSLRobustValueError(
            f"{spec.name} target must have the batch size {images.shape[0]} as its first "
            f"dimension; got shape {tuple(target.shape)}"
        )
    if spec.dense and tuple(target.shape[-2:]) != tuple(images.shape[-2:]):
        raise _checks.SSLRobustValueError(
            f"{spec.name} is a dense task: the target's last two dimensions must be the "
            f"images' (H, W) = {tuple(images.shape[-2:])}; got shape {tuple(target.shape)}"
        )
    return target


def _per_sample_headline(spec: TaskSpec, pred: Tensor, target: Tensor, info: DatasetInfo) -> Tensor:
    """The headline metric of each sample alone (the default per-sample quality)."""
    values = []
    for i in range(pred.shape[0]):
        metric = spec.make_metric(info)
        move = getattr(metric, "to", None)
        if callable(move):
            move(pred.device)
        metric.update(pred[i : i + 1], target[i : i + 1])
        values.append(spec.headline(metric.compute()))
    return torch.tensor(values, dtype=torch.float32, device=pred.device)


def _damage_from_direction(
    spec: TaskSpec, pred: Tensor, target: Tensor, info: DatasetInfo
) -> Tensor:
    quality = spec.sample_metric(pred, target, info)
    return -quality if spec.higher_is_better else quality


class TaskAttack(Attack):
    """The shared PGD core on a task's per-sample loss (the default task attack).

    Maximizes :attr:`TaskSpec.loss`; where the task defines :attr:`TaskSpec.success`, that
    is the per-sample success (early stop, success-first best iterate) and the ``broken``
    flag in an :class:`~ssl_robust.attacks.Ensemble`, whose damage is
    :attr:`TaskSpec.damage`.

    Args:
        model: the task model.
        spec: the task (a :class:`TaskSpec` or a registered name).
        info: the dataset facts the loss and metric need (default: the head's).
        **options: the options of every :class:`~ssl_robust.attacks.Attack`.

    Example:
        >>> import torch
        >>> from ssl_robust.adaptors import LinearClassifier, TaskModel
        >>> from ssl_robust.encoders import VisionTransformer
        >>> enc = VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2)
        >>> model = TaskModel(enc, LinearClassifier(16, 3)).eval()
        >>> attack = TaskAttack(model, spec="classification", steps=3)
        >>> x = torch.rand(2, 3, 16, 16)
        >>> res = attack.run(x, torch.tensor([0, 1]))
        >>> res.loss.shape, bool((res.adversarial - x).abs().max() <= 8 / 255 + 1e-6)
        (torch.Size([2]), True)
    """

    def __init__(
        self,
        model: nn.Module | Callable[[Tensor], Any],
        *,
        spec: TaskSpec | str,
        info: DatasetInfo | None = None,
        **options: Any,
    ) -> None:
        super().__init__(model, **options)
        self.spec = get_task(spec)
        if info is None:
            head = getattr(_checks.inner_module(model), "adaptor", None)
            info = self.spec.head_info(head if head is not None else model)  # type: ignore[arg-type]
        self.info = info
        self.task = self.spec.name  # type: ignore[misc]  # per instance: the spec's task

    def prepare_target(self, images: Tensor, target: Any) -> Any:
        if not isinstance(target, Tensor):
            raise _checks.SSLRobustTypeError(
                f"{type(self).__name__} ({self.spec.name}) needs the target tensor; got "
                f"{type(target).__name__}"
            )
        return target.to(images.device)

    def loss(self, output: Any, target: Any, step: int) -> Tensor:
        loss = self.spec.loss(output, target, self.info)
        _check_per_sample(self.spec, loss, output)
        return loss

    def success(self, output: Any, target: Any) -> Tensor | None:
        if self.spec.success is None:
            return None
        return self.spec.success(output, target, self.info).bool()

    def damage(self, output: Any, target: Any) -> tuple[Tensor, Tensor]:
        damage = self.spec.damage(output, target, self.info)
        broken = self.success(output, target)
        return damage, torch.zeros_like(damage, dtype=torch.bool) if broken is None else broken

    def extra_repr(self) -> str:
        return f"task={self.spec.name!r}, {super().extra_repr()}"


def _check_per_sample(spec: TaskSpec, loss: object, output: Any) -> None:
    batch = int(output.shape[0]) if isinstance(output, Tensor) else -1
    if not isinstance(loss, Tensor) or loss.ndim != 1 or (batch >= 0 and loss.shape[0] != batch):
        got = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise _checks.SSLRobustValueError(
            f"task {spec.name!r}: loss must be per sample, shape ({batch},) for a batch of "
            f"{batch}; got {got} — return one value per sample (reduction='none', then a mean "
            "over the other dimensions)"
        )


def _default_strong(
    spec: TaskSpec,
    model: Any,
    info: DatasetInfo,
    *,
    eps: float = 8 / 255,
    norm: Literal["linf", "l2"] = "linf",
    steps: int = 100,
    generator: torch.Generator | None = None,
    restarts: int = 2,
    **options: Any,
) -> Ensemble:
    """APGD on the task loss with restarts, then the task attack (fixed step eps/4)."""
    common = {"eps": eps, "norm": norm, "steps": steps, "generator": generator, **options}
    apgd = TaskAttack(
        model, spec=spec, info=info, schedule="apgd", restarts=restarts,
        early_stop=spec.success is not None, **common,
    )  # fmt: skip
    fixed = spec.make_attack(model, info, **{"step_size": eps / 4, **common})
    return Ensemble([apgd, fixed])


# ----------------------------------------------------------------------------- helpers
def _classes(head: nn.Module) -> int:
    return int(getattr(head, "num_classes", 1 << 62))


def _info(name: str, head: nn.Module, **facts: Any) -> DatasetInfo:
    return DatasetInfo(name=getattr(head, "task", name), tasks=(name,), **facts)


def _unnormed_last_block(encoder: Encoder) -> Encoder:
    if not hasattr(encoder, "output_norm"):
        return encoder
    return feature_view(encoder, output_layer=-1, output_norm=False)


def _dense_target(target: Tensor) -> Tensor:
    return target[:, 0] if target.ndim == 4 else target


def _depth_mask(target: Tensor, lo: float, hi: float) -> Tensor:
    return (target > lo) & (target <= hi)


# ----------------------------------------------------------------------------- classification
def _cls_loss(out: Tensor, target: Tensor, info: DatasetInfo) -> Tensor:
    return F.cross_entropy(out.float(), target, reduction="none")


def _cls_train_loss(out: Tensor, target: Tensor, info: DatasetInfo) -> Tensor:
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
def _seg_ce(out: Tensor, target: Tensor, ignore_index: int) -> tuple[Tensor, Tensor]:
    valid = target != ignore_index
    ce = F.cross_entropy(out.float(), target.masked_fill(~valid, 0), reduction="none")
    return ce * valid, valid


def _seg_loss(out: Tensor, target: Tensor, info: DatasetInfo) -> Tensor:
    ce, valid = _seg_ce(out, target, info.ignore_index)
    return ce.flatten(1).sum(1) / valid.flatten(1).sum(1).clamp_min(1)


def _seg_train_loss(out: Tensor, target: Tensor, info: DatasetInfo) -> Tensor:
    ce, valid = _seg_ce(out, target, info.ignore_index)  # averaged over the batch's pixels
    return ce.sum() / valid.sum().clamp_min(1)


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
def _depth_loss(out: Tensor, target: Tensor, info: DatasetInfo) -> Tensor:
    pred, target = _dense_target(out), _dense_target(target)
    return depth_loss(pred, target, _depth_mask(target, info.min_depth, info.max_depth))


def _depth_check(target: Any, images: Tensor, head: nn.Module, ignore_index: int) -> Tensor:
    size = (int(images.shape[2]), int(images.shape[3]))
    depth = _checks.check_depth_map(target, batch=images.shape[0], size=size, name="target")
    return _dense_target(depth)


def _argmax_classes(pred: Tensor) -> Tensor:
    """Class per sample (B, C) or per pixel (B, C, H, W): the argmax over dimension 1."""
    return pred.argmax(1)


def _depth_rmse(pred: Tensor, target: Tensor, info: DatasetInfo) -> Tensor:
    p = _dense_target(pred).double()
    t = _dense_target(target).to(p.device).double()
    m = _depth_mask(t, info.min_depth, info.max_depth)
    err = torch.where(m, p - t, torch.zeros_like(p)).pow(2).flatten(1).sum(1)
    return (err / m.flatten(1).sum(1).clamp_min(1)).sqrt().float()


def _depth_info(head: nn.Module) -> DatasetInfo:
    return _info(
        "depth",
        head,
        min_depth=float(getattr(head, "min_depth", 1e-3)),
        max_depth=float(getattr(head, "max_depth", 10.0)),
    )


# ----------------------------------------------------------------------------- the registry
_REGISTRY: Registry[TaskSpec] = Registry("task", entry_type=TaskSpec)


def register_task(spec: TaskSpec, *, overwrite: bool = False) -> TaskSpec:
    """Register ``spec`` under ``spec.name``; ``fit``, ``evaluate``, ``strong_attack`` and the
    benchmark then run the task by name. Returns ``spec`` (usable as a decorator target).

    Args:
        spec: the task.
        overwrite: replace a task of the same name registered by someone else (a warning
            names both).

    Raises:
        SSLRobustTypeError: ``spec`` is not a :class:`TaskSpec`.
        SSLRobustValueError: the name is taken by another spec (the error names who
            registered it first), unless ``overwrite=True``.

    Example:
        >>> cls = get_task("classification")
        >>> register_task(cls) is cls  # the same object again: fine
        True
        >>> try:
        ...     register_task(dataclasses.replace(cls, metric_key="acc"))
        ... except ValueError as err:
        ...     print(str(err).split(";")[0])
        task 'classification' is already registered by ssl_robust (built-in)
    """
    return _REGISTRY.add(spec, overwrite=overwrite)


register_task(
    TaskSpec(
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
        train_loss=_cls_train_loss,
        check_target=_cls_check,
        sample_metric=_cls_sample,
        damage=_cls_damage,
        predicted=_argmax_classes,
        head_info=lambda head: _info("classification", head, num_classes=_classes(head)),
        make_strong_attack=lambda model, info, **kw: strong_attack(
            model, task="classification", **kw
        ),
        encoder_view=lambda encoder: encoder,
        fit_preset=PRESETS["classification"],
    )
)
register_task(
    TaskSpec(
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
        train_loss=_seg_train_loss,
        check_target=_seg_check,
        sample_metric=_seg_sample,
        damage=_seg_damage,
        predicted=_argmax_classes,
        head_info=lambda head: _info("segmentation", head, seg_classes=_classes(head)),
        make_strong_attack=lambda model, info, **kw: strong_attack(
            model, task="segmentation", ignore_index=info.ignore_index, **kw
        ),
        encoder_view=lambda encoder: encoder,
        fit_preset=PRESETS["segmentation"],
    )
)
register_task(
    TaskSpec(
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
        head_info=_depth_info,
        make_strong_attack=lambda model, info, **kw: strong_attack(
            model, task="depth", min_depth=info.min_depth, max_depth=info.max_depth, **kw
        ),
        encoder_view=_unnormed_last_block,
        fit_preset=PRESETS["depth"],
    )
)

#: The paper's tasks, in its table order (every registered task: :func:`list_tasks`).
TASKS: tuple[str, ...] = ("classification", "segmentation", "depth")


def list_tasks() -> list[str]:
    """The registered task names: the paper's three in table order, then the registered ones
    (installed plugins are read first).

    Example:
        >>> list_tasks()[:3]
        ['classification', 'segmentation', 'depth']
    """
    return _REGISTRY.names()


def get_task(name: str | TaskSpec) -> TaskSpec:
    """The :class:`TaskSpec` of ``name``, or ``name`` itself when it is a TaskSpec.

    Raises:
        SSLRobustValueError: unknown task, listing the registered names and the plugins that
            failed to load.
        SSLRobustTypeError: neither a string nor a TaskSpec.
    """
    return _REGISTRY.get(name)


def check_task_name(where: str, value: object) -> str:
    """``value`` if it names a registered task; else an error listing the registered tasks
    and the plugins that failed to load (``"<where> must be one of ...; got ..."``)."""
    return _REGISTRY.check_name(where, value)


def task_origin(name: str) -> str:
    """Where a task comes from: ``"built-in"``, a plugin's distribution, or a package."""
    return _REGISTRY.origin(name)


def table_number(task: str | TaskSpec) -> int:
    """The table number of a task in ``tables.md``: its ``table``, or for registered tasks
    without one the next numbers after the paper's three, in registration order.

    Example:
        >>> table_number("depth")
        3
    """
    spec = get_task(task)
    if spec.table is not None:
        return spec.table
    taken = {s.table for _, s in _REGISTRY.items() if s.table is not None}
    number = max(taken | {len(TASKS)})
    for _, other in _REGISTRY.items():
        if other.table is None:
            number += 1
            if other is spec or other.name == spec.name:
                return number
    return number + 1


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
