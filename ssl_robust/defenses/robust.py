"""RobustTrainer: one robust fine-tuning loop for every objective (DeACL, FARE, TaskAT)."""

from __future__ import annotations

import contextlib
import copy
import functools
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .. import _checks
from ..data.batches import unpack_batch
from ..encoders.base import EncoderOutput
from ..runtime import atomic_save
from . import _loop
from .augment import augment_with_targets, random_resized_crop_flip
from .combine import COMBINES, Combine, combine_losses, pick_random
from .config import RobustConfig
from .objectives import FARE, DeACL, Features, Objective, StepInputs, Terms, embedding_part
from .schedule import warmup_cosine
from .task_at import TaskAT

__all__ = ["OBJECTIVES", "RobustTrainer"]

#: Objective names accepted in ``objectives=[...]`` (as strings, with their defaults).
OBJECTIVES: dict[str, type[Objective]] = {"deacl": DeACL, "fare": FARE, "task_at": TaskAT}

#: Tag stored in RobustTrainer state dicts and checkpoints.
STATE_FORMAT = "ssl_robust.robust/1"


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _objective(value: object, index: int) -> Objective:
    if isinstance(value, Objective):
        return value
    if isinstance(value, str):
        if value not in OBJECTIVES:
            raise _checks.SSLRobustValueError(
                f"unknown objective {value!r}; valid objectives are: {', '.join(OBJECTIVES)}"
            )
        if value == "task_at":
            raise _checks.SSLRobustValueError(
                "objective 'task_at' needs its heads: pass TaskAT(heads={task: head, ...})"
            )
        return OBJECTIVES[value]()
    raise _checks.SSLRobustTypeError(
        f"objectives[{index}] must be an objective (DeACL(...), FARE(...), TaskAT(...)) or one "
        f"of the names {', '.join(OBJECTIVES)}; got {type(value).__name__}"
    )


def _slice(out: Any, a: int, b: int) -> Any:
    if isinstance(out, EncoderOutput):
        return EncoderOutput(cls=out.cls[a:b], patches=out.patches[a:b], grid=out.grid)
    return out[a:b]


class NormedAndRaw(nn.Module):
    """The built-in ViT returning ``(normed, raw)`` from one forward: the last block's tokens
    with and without the final norm (the depth head reads the raw ones). A wrapper, so that
    DistributedDataParallel sees the norm inside its forward."""

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.student = student

    @staticmethod
    def fits(student: nn.Module) -> bool:
        """Whether ``student`` has the options (a ViT normed at its last block only)."""
        depth = int(getattr(student, "depth", 0))
        return (
            getattr(student, "output_norm", False) is True
            and isinstance(getattr(student, "norm", None), nn.Module)
            and getattr(student, "n_last_blocks", 1) == 1
            and getattr(student, "output_layer", -1) in (-1, depth - 1)
        )

    def forward(self, x: Tensor) -> tuple[EncoderOutput, EncoderOutput]:
        s = self.student
        object.__setattr__(s, "output_norm", False)
        try:
            raw = s(x)
        finally:
            object.__setattr__(s, "output_norm", True)
        norm: nn.Module = s.norm  # type: ignore[assignment]
        normed = EncoderOutput(cls=norm(raw.cls), patches=norm(raw.patches), grid=raw.grid)
        return normed, raw


class RobustTrainer:
    r"""Robust fine-tuning of an encoder with pluggable objectives, on one loop.

    Per batch the loop runs the frozen teacher once (``no_grad``), runs each active
    perturbation's attack once (on the student in eval mode, without touching any parameter
    ``.grad``), then the student once over the clean and all adversarial images together in
    train mode (once per group for students with BatchNorm, whose statistics must not mix),
    and hands each objective its slices. The loss is the sum of the objectives' anchors plus
    the combination of their per-perturbation losses:

    - ``combine="avg"``: the mean of the perturbations' losses;
    - ``combine="max"``: per sample, the perturbation whose loss rose most above its clean
      loss (raw losses of different objectives differ in scale), Tramèr & Boneh's max;
    - ``combine="random"``: one perturbation per step, drawn from ``trainer.generator``; only
      its attack runs.

    Objectives: :class:`~ssl_robust.defenses.DeACL`, :class:`~ssl_robust.defenses.FARE`,
    :class:`~ssl_robust.defenses.TaskAT` (which needs an anchor, DeACL or FARE, in the same
    list). A head of TaskAT that reads the last block's tokens without the final norm (the
    depth protocol) gets them from the same student pass (the norm is applied to them for the
    other objectives) when the student is the built-in ViT.

    Use :meth:`training_step` in your own loop, or :meth:`fit` (checkpoints, bit-exact resume,
    torch.distributed, callbacks). All randomness comes from ``trainer.generator``, seeded
    with ``config.seed``. :class:`~ssl_robust.defenses.DeACLTrainer` is this loop with
    ``objectives=[DeACL(...)]``.

    Args:
        student: the encoder to fine-tune (an :class:`~ssl_robust.encoders.Encoder`, or a
            module returning a (B, D) tensor for CLS-only objectives). Put it on its device
            first.
        teacher: the frozen reference; defaults to a deep copy of ``student`` (eval mode,
            ``requires_grad=False``, never updated).
        objectives: objectives or their names (``"deacl"``, ``"fare"`` with defaults).
        combine: ``"avg"``, ``"max"`` or ``"random"``.
        config: a :class:`~ssl_robust.defenses.RobustConfig`.
        optimizer: defaults to SGD over the student's trainable parameters (config lr,
            momentum, weight decay), plus a group per co-trained TaskAT head at its
            ``head_lr``.
        scheduler: defaults to :func:`~ssl_robust.defenses.warmup_cosine` per epoch.

    Raises:
        SSLRobustValueError: unknown objective or combine names (the valid ones listed),
            TaskAT without an anchor, a head whose embedding size is not the student's, the
            teacher being the student, different embedding sizes.
        SSLRobustTypeError: bad argument types.

    Warns:
        UserWarning: ``combine="max"`` with a single perturbation (it acts as ``"avg"``).

    Example:
        >>> import torch
        >>> from ssl_robust.encoders import VisionTransformer
        >>> from ssl_robust.defenses import FARE, RobustConfig, RobustTrainer
        >>> enc = VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2)
        >>> trainer = RobustTrainer(enc, objectives=[FARE(tokens="cls+patch", steps=2)],
        ...                         config=RobustConfig(epochs=1, warmup_epochs=0))
        >>> sorted(trainer.training_step(torch.rand(4, 3, 16, 16)))
        ['fare', 'loss', 'lr']
    """

    #: File name of the checkpoint ``fit`` keeps in ``checkpoint_dir``.
    checkpoint_name: ClassVar[str] = "robust_checkpoint.pt"
    #: Name in logs and progress bars.
    label: ClassVar[str] = "robust"

    def __init__(
        self,
        student: nn.Module,
        *,
        teacher: nn.Module | None = None,
        objectives: Sequence[Objective | str] = ("deacl",),
        combine: Combine = "avg",
        config: RobustConfig | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    ) -> None:
        loop = RobustConfig() if config is None else config
        if not isinstance(loop, RobustConfig):
            raise _checks.SSLRobustTypeError(
                f"config must be a RobustConfig; got {type(loop).__name__}"
            )
        self._setup(student, teacher, objectives, combine, loop, optimizer, scheduler)
        self.config: Any = loop

    # ------------------------------------------------------------------ construction
    def _setup(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        objectives: Sequence[Objective | str],
        combine: str,
        loop: RobustConfig,
        optimizer: torch.optim.Optimizer | None,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    ) -> None:
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
        if isinstance(objectives, (str, Objective)) or not isinstance(objectives, Sequence):
            raise _checks.SSLRobustTypeError(
                "objectives must be a list of objectives, e.g. [FARE(), TaskAT(heads=...)]; "
                f"got {type(objectives).__name__}"
            )
        objs = [_objective(o, i) for i, o in enumerate(objectives)]
        if not objs:
            raise _checks.SSLRobustValueError(
                f"objectives must not be empty; valid objectives are: {', '.join(OBJECTIVES)}"
            )
        if len({id(o) for o in objs}) != len(objs):
            raise _checks.SSLRobustValueError("the same objective object is listed twice")
        self.combine: str = _checks.check_choice("combine", combine, COMBINES)
        if any(isinstance(o, TaskAT) for o in objs) and not any(o.anchor for o in objs):
            raise _checks.SSLRobustValueError(
                "TaskAT needs a distillation anchor that keeps clean quality: add FARE(...) or "
                "DeACL(...) to objectives"
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
        self.loop_config = loop
        self.generator = torch.Generator().manual_seed(loop.seed)
        self.objectives: list[Objective] = objs
        for obj in objs:
            obj.bind(student, self.generator)
        self.perturbations: list[tuple[int, int, str]] = [
            (i, j, label) for i, o in enumerate(objs) for j, label in enumerate(o.perturbations())
        ]
        self._effective_combine = self.combine
        if self.combine == "max" and len(self.perturbations) == 1:
            warnings.warn(
                "combine='max' with a single perturbation "
                f"({self.perturbations[0][2]!r}) has nothing to choose from; it acts as 'avg'",
                UserWarning,
                stacklevel=3,
            )
            self._effective_combine = "avg"
        self.head_params = [p for o in objs if isinstance(o, TaskAT) for p in o.head_parameters()]
        if optimizer is None:
            params = [p for p in student.parameters() if p.requires_grad]
            if not params:
                raise _checks.SSLRobustValueError("student has no trainable parameters")
            optimizer = torch.optim.SGD(
                params, lr=loop.lr, momentum=loop.momentum, weight_decay=loop.weight_decay
            )
            for obj in objs:
                if isinstance(obj, TaskAT) and obj.head_parameters():
                    optimizer.add_param_group({"params": obj.head_parameters(), "lr": obj.head_lr})
        elif not isinstance(optimizer, torch.optim.Optimizer):
            raise _checks.SSLRobustTypeError(
                f"optimizer must be a torch.optim.Optimizer; got {type(optimizer).__name__}"
            )
        if scheduler is None:
            factor = functools.partial(
                warmup_cosine, epochs=loop.epochs, warmup_epochs=loop.warmup_epochs
            )
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        elif getattr(scheduler, "optimizer", optimizer) is not optimizer:
            raise _checks.SSLRobustValueError("scheduler must wrap the trainer's optimizer")
        self.optimizer = optimizer
        self.scheduler = scheduler
        #: Number of epochs completed by :meth:`fit` (restored from checkpoints).
        self.epoch = 0
        #: What the training pass runs (and DDP wraps): the student, or the student returning
        #: its normed and raw tokens at once when a head reads the raw ones.
        self._pass_module: nn.Module = student
        if any(o.needs_raw for o in objs) and NormedAndRaw.fits(student):
            self._pass_module = NormedAndRaw(student)
        self._model: nn.Module = self._pass_module  # the DDP wrapper while fit runs distributed
        self._separate = _has_batchnorm(student)
        self._checked = False

    # ------------------------------------------------------------------ the step
    @property
    def device(self) -> torch.device:
        """Where the student's parameters live (batches are moved there)."""
        for p in self.student.parameters():
            return p.device
        return torch.device("cpu")

    @property
    def tasks(self) -> list[str]:
        """The tasks of the TaskAT heads (the targets batches must carry)."""
        return [t for o in self.objectives if isinstance(o, TaskAT) for t in o.heads]

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        if self.loop_config.amp == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _parts(self) -> tuple[str, ...]:
        tokens = {o.tokens for o in self.objectives}
        return ("cls",) if tokens == {"cls"} else ("cls", "patch")

    def _check_teacher(self, images: Tensor, teacher_out: Any) -> None:
        """Compare the teacher's and the student's outputs once (1-image probe)."""
        was_training = self.student.training
        self.student.eval()
        try:
            with torch.no_grad():
                student_out = self.student(images[:1])
        finally:
            self.student.train(was_training)
        for obj in self.objectives:
            obj.check_output(student_out)
        for part in self._parts():
            s, t = embedding_part(student_out, part), embedding_part(teacher_out, part)
            if s.shape[1:] != t.shape[1:]:
                raise _checks.SSLRobustValueError(
                    f"teacher and student embeddings must have the same shape; got teacher "
                    f"{tuple(t.shape[1:])}, student {tuple(s.shape[1:])} per image ({part} "
                    "tokens) — the teacher must be the pretrained version of the student"
                )
        self._checked = True

    def _active(self, tasks: Sequence[str] | None) -> list[int]:
        """Indices into ``self.perturbations`` trained on this step."""
        active = [
            k
            for k, (i, _, label) in enumerate(self.perturbations)
            if tasks is None or not isinstance(self.objectives[i], TaskAT) or label in tasks
        ]
        if self.combine == "random" and len(active) > 1:
            active = [active[pick_random(len(active), self.generator)]]
        return active

    def _run_student(self, x: Tensor) -> Features:
        if not any(o.needs_raw for o in self.objectives):
            return Features(self._model(x))
        if isinstance(self._pass_module, NormedAndRaw):
            normed, raw = self._model(x)
            return Features(normed, raw)
        from ..adaptors.depth import feature_view  # an encoder without the option: 2nd pass

        view: Any = feature_view(self.student, output_norm=False)  # type: ignore[type-var]
        return Features(self._model(x), view(x))

    def _student_pass(self, groups: list[Tensor]) -> list[Features]:
        if self._separate or len(groups) == 1:
            return [self._run_student(g) for g in groups]
        feats = self._run_student(torch.cat(groups))
        result, start = [], 0
        for g in groups:
            end = start + g.shape[0]
            raw = None if feats.raw is None else _slice(feats.raw, start, end)
            result.append(Features(_slice(feats.out, start, end), raw))
            start = end
        return result

    def _forward(
        self, images: Tensor, targets: Mapping[str, Tensor], tasks: Sequence[str] | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Teacher once (no grad), each active attack once, one student pass, the losses."""
        with self._autocast(images.device):
            with torch.no_grad():
                teacher_out = self.teacher(images)
            if not self._checked:
                self._check_teacher(images, teacher_out)
            inputs = StepInputs(images, teacher_out, targets)
            active = self._active(tasks)
            adversarial = []
            for k in active:
                i, j, _ = self.perturbations[k]
                adversarial.append(self.objectives[i].attack(j, inputs))
            self.student.train()
            feats = self._student_pass([images, *adversarial])
        return self._losses(inputs, feats, active)

    def _losses(
        self, inputs: StepInputs, feats: list[Features], active: list[int]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        with_clean = self._effective_combine == "max" and len(active) > 1
        terms: list[Terms] = []
        for i, obj in enumerate(self.objectives):
            mine = {
                self.perturbations[k][1]: feats[n + 1]
                for n, k in enumerate(active)
                if self.perturbations[k][0] == i
            }
            terms.append(obj.terms(inputs, feats[0], mine, with_clean=with_clean))
        stats: dict[str, Tensor] = {}
        for t in terms:
            stats.update(t.stats)
        owner = self.perturbations[active[0]][0] if len(active) == 1 else -1
        loss: Tensor
        if owner >= 0 and terms[owner].total is not None:
            loss = terms[owner].total  # type: ignore[assignment]
            for i, t in enumerate(terms):
                if i != owner and t.anchor is not None:
                    loss = loss + t.anchor
            return loss, stats
        adv, clean = [], []
        for k in active:
            i, j, _ = self.perturbations[k]
            adv.append(terms[i].adversarial[j])
            if with_clean:
                clean.append(terms[i].clean[j])
        loss = combine_losses(adv, clean if with_clean else None, how=self._effective_combine)
        for t in terms:
            if t.anchor is not None:
                loss = loss + t.anchor
        return loss, stats

    def _prepare(
        self, batch: object, tasks: Sequence[str] | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        where = f"{self.label} fine-tuning"
        images, _ = unpack_batch(batch, where=where)
        x = _checks.check_images(images).to(self.device, non_blocking=True)
        needed: dict[str, str] = {}
        for obj in self.objectives:
            if isinstance(obj, TaskAT):
                for task, spec in obj.specs.items():
                    if tasks is None or task in tasks:
                        needed[spec.target_key] = task
        targets: dict[str, Tensor] = {}
        if not needed:
            return x, targets
        if isinstance(batch, Mapping):
            missing = {k: t for k, t in needed.items() if k not in batch}
            if missing:
                key, task = next(iter(missing.items()))
                raise _checks.SSLRobustValueError(
                    f"the batch has no {key!r} target, which TaskAT's {task} head needs: its "
                    f"keys are {sorted(str(k) for k in batch)} — give dict batches carrying "
                    "every trained task's target, or fit({task: loader}) with one loader per "
                    "task"
                )
            for key in needed:
                targets[key] = batch[key].to(self.device, non_blocking=True)
        elif isinstance(batch, (tuple, list)) and len(batch) >= 2 and len(needed) == 1:
            key = next(iter(needed))
            value = batch[1]
            if not isinstance(value, Tensor):
                raise _checks.SSLRobustTypeError(
                    f"the {needed[key]} target must be a tensor; got {type(value).__name__}"
                )
            targets[key] = value.to(self.device, non_blocking=True)
        else:
            raise _checks.SSLRobustValueError(
                f"TaskAT's heads ({', '.join(needed.values())}) need their targets "
                f"{sorted(needed)}, but the batch is a {type(batch).__name__} without them: "
                "give dict batches (collated Sample dicts, e.g. the shapes dataset) or "
                "(images, target) pairs for a single task"
            )
        return x, targets

    def loss(self, images: Tensor | Any) -> Tensor:
        """The loss on a batch (no augmentation): a scalar with gradients.

        The attacks start from ``trainer.generator``; the student ends in train mode.

        Shape:
            - images: (B, C, H, W) in [0, 1], or a batch carrying the heads' targets.
        """
        x, targets = self._prepare(images)
        return self._forward(x, targets)[0]

    def training_step(
        self, batch: Tensor | Any, *, tasks: Sequence[str] | None = None
    ) -> dict[str, float]:
        """One optimizer step on a batch (augmented when ``config.augment``).

        Args:
            batch: an image batch (B, C, H, W) in [0, 1], or any loader batch
                :func:`~ssl_robust.data.unpack_batch` takes; with TaskAT, a dict batch
                carrying the heads' targets (``label``, ``mask``, ``depth``), or an
                ``(images, target)`` pair for a single head.
            tasks: train only these TaskAT heads on this batch (the other objectives always
                run); None: all heads.

        Returns:
            Plain floats: ``loss``, each objective's terms, and the learning rate ``lr``.

        Raises:
            SSLRobustValueError: a batch without a trained head's target (the keys present
                and the task are named).
        """
        if tasks is not None:
            unknown = sorted(set(tasks) - set(self.tasks))
            if unknown:
                raise _checks.SSLRobustValueError(
                    f"tasks {unknown} have no TaskAT head; heads: {self.tasks}"
                )
        x, targets = self._prepare(batch, tasks)
        if self.loop_config.augment:
            if targets:
                x, targets = augment_with_targets(x, targets, generator=self.generator)
            else:
                x = random_resized_crop_flip(x, generator=self.generator)
        loss, terms = self._forward(x, targets, tasks)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        if self.head_params and dist.is_available() and dist.is_initialized():
            world = dist.get_world_size()
            for p in self.head_params:  # heads are not in DDP: average their gradients here
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad.div_(world)
        self.optimizer.step()
        stats = {"loss": float(loss.detach())}
        stats.update({k: float(v) for k, v in terms.items()})
        stats["lr"] = float(self.optimizer.param_groups[0]["lr"])
        return stats

    # ------------------------------------------------------------------ state
    def _header(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "config": self.loop_config.to_dict(),
            "objectives": [o.config() for o in self.objectives],
            "combine": self.combine,
        }

    def _differences(self, state: dict[str, Any]) -> list[str]:
        diffs = [f"config.{d}" for d in self.loop_config.differences(state.get("config", {}))]
        stored = state.get("objectives", [])
        now = [o.config() for o in self.objectives]
        if [s.get("name") for s in stored] != [n["name"] for n in now]:
            diffs.append(
                f"objectives: stored {[s.get('name') for s in stored]}, now "
                f"{[n['name'] for n in now]}"
            )
        else:
            for k, (s, n) in enumerate(zip(stored, now, strict=True)):
                for key in sorted(set(s) | set(n)):
                    if s.get(key, "<missing>") != n.get(key, "<missing>"):
                        diffs.append(
                            f"objectives[{k}].{key}: stored {s.get(key, '<missing>')!r}, now "
                            f"{n.get(key, '<missing>')!r}"
                        )
        if state.get("combine") != self.combine:
            diffs.append(f"combine: stored {state.get('combine')!r}, now {self.combine!r}")
        return diffs

    def _heads_state(self) -> dict[str, Any]:
        return {
            f"{i}.{task}": head.state_dict()
            for i, o in enumerate(self.objectives)
            if isinstance(o, TaskAT) and o.train_heads
            for task, head in o.heads.items()
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: student, co-trained heads, optimizer, scheduler,
        epoch, RNG, config and objectives.

        Holds only tensors and plain Python values (loads with ``weights_only=True``).
        """
        state = self._header()
        state.update(
            epoch=self.epoch,
            student=self.student.state_dict(),
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            generator=self.generator.get_state(),
        )
        heads = self._heads_state()
        if heads:
            state["heads"] = heads
        return state

    def load_state_dict(self, state: dict[str, Any], *, check_config: bool = True) -> None:
        """Restore a :meth:`state_dict`.

        Raises:
            SSLRobustValueError: a state of another trainer, or (with ``check_config``) one
                saved with other settings (the differing fields are listed).
        """
        fmt = self._header()["format"]
        if not isinstance(state, dict) or state.get("format") != fmt:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise _checks.SSLRobustValueError(
                f"not a {type(self).__name__} state (format {fmt!r}); got {found!r}"
            )
        diffs = self._differences(state)
        if check_config and diffs:
            raise _checks.SSLRobustValueError(
                f"the state was saved with a different {self._config_name}: " + "; ".join(diffs)
            )
        self.student.load_state_dict(state["student"])
        for i, o in enumerate(self.objectives):
            if isinstance(o, TaskAT) and o.train_heads:
                for task, head in o.heads.items():
                    head.load_state_dict(state["heads"][f"{i}.{task}"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        self.epoch = int(state["epoch"])

    _config_name: ClassVar[str] = "configuration"

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
        loader: Iterable[Any] | Mapping[str, Iterable[Any]],
        *,
        epochs: int | None = None,
        checkpoint_dir: str | Path | None = None,
        callbacks: Iterable[_loop.EpochCallback] = (),
        overwrite: bool = False,
        progress: bool = True,
    ) -> list[dict[str, float]]:
        """Train until ``epochs`` epochs (default ``config.epochs``) have run in total.

        The learning-rate schedule always spans ``config.epochs``, so ``fit(epochs=10)``
        followed by ``fit(epochs=20)`` is the same run as ``fit(epochs=20)``. With
        ``checkpoint_dir``, a checkpoint is written after every epoch (atomically; rank 0 only
        under torch.distributed) and an existing one is resumed from automatically (bit-exact:
        the same weights as an uninterrupted run). Under an initialized process group
        (torchrun) the student is wrapped in DistributedDataParallel and ``set_epoch`` is
        called on the loaders' samplers.

        Args:
            loader: yields batches (see :meth:`training_step`); or a mapping ``{task:
                loader}`` with one loader per TaskAT head (e.g. classification on one
                dataset, segmentation on another): the loaders take turns, one batch each,
                and each batch trains its task's head (plus the anchors); shorter loaders
                restart until the longest has been seen once per epoch.
            epochs: total epochs to reach (<= ``config.epochs``).
            checkpoint_dir: where to keep the checkpoint (:attr:`checkpoint_name`).
            callbacks: called as ``callback(epoch, student)`` with the student in eval mode
                before training (epoch 0, fresh runs only) and after every epoch, e.g. to
                record robustness curves.
            overwrite: start afresh even if ``checkpoint_dir`` holds a checkpoint.
            progress: show a tqdm bar (rank 0, when tqdm is installed).

        Returns:
            One dict per epoch run now: the mean of every training-step statistic, ``lr``,
            ``time`` (seconds) and ``epoch``.

        Raises:
            SSLRobustValueError: ``epochs`` beyond ``config.epochs``, an empty loader, a
                checkpoint of other settings without ``overwrite=True``, a mapping without
                a loader for a head's task (or with a loader for a task without a head).
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
        names = [o.name for o in self.objectives]
        kind = type(self).__name__
        return f"{kind}(epoch={self.epoch}, objectives={names}, combine={self.combine!r})"
