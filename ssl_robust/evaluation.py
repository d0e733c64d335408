"""The streaming evaluation loop: per batch attack → predict → metric update.

:func:`evaluate` runs one or several task models over a loader, clean and under attacks, and
keeps only metric states (plus a fixed number of images for galleries), so memory does not
grow with the number of evaluation images. An :class:`~ssl_robust.attacks.Attack` instance is
run once per batch and its adversarial images are scored by every model (attack once,
evaluate many: one EmbedAttack on the shared encoder for all its heads); a factory
``model -> Attack`` builds one attack per model (task attacks need the head).

Random starts are drawn per sample from ``(seed, attack name, global sample index)``, so the
results depend neither on the batch size nor on the number of ranks. Under an initialized
``torch.distributed`` group each rank evaluates a contiguous shard of a DataLoader's dataset
and the metric states are summed over ranks when computed.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from . import _checks
from .attacks import NORMS, Attack, EmbedAttack, Ensemble, Norm, SeededStart
from .data.base import DatasetInfo
from .data.batches import unpack_batch
from .metrics import Metric
from .runtime import progress_bar, rank_world, tick
from .tasks import TaskSpec, check_head_classes, get_task

__all__ = [
    "AttackLike",
    "EvalResult",
    "SeededStart",
    "evaluate",
    "head_of",
    "sample_seeds",
    "seeded_starts",
]

#: What ``evaluate(attacks=...)`` takes per name: an attack (or ensemble) run once per batch
#: and scored by every model, or a factory ``model -> attack`` run once per model.
AttackLike = Attack | Ensemble | Callable[[nn.Module], Attack | Ensemble]
MetricLike = Metric[Any] | Callable[[], Metric[Any]]


@dataclass
class EvalResult:
    """What :func:`evaluate` returns.

    Attributes:
        values: ``values[model][condition]``: the metric's ``compute()`` value, for the
            condition ``"clean"`` and every attack name (all ranks summed).
        headline: the same as floats (the task's headline metric, e.g. RMSE for depth).
        kept: ``kept[model]``: the first ``keep`` samples (global order) held by this rank:
            ``images``, ``target``, and per condition ``adv/<name>`` (attacked images) and
            ``pred/<condition>`` (predicted labels or depth); images of different sizes are
            padded at the bottom/right (0, or 255 for integer masks).
        samples: number of samples evaluated (all ranks).
        seconds: wall time spent in each attack on this rank.
        world_size: number of ranks that took part.
    """

    values: dict[str, dict[str, Any]]
    headline: dict[str, dict[str, float]]
    kept: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    samples: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    world_size: int = 1


def sample_seeds(seed: int, name: str, indices: Iterable[int]) -> list[int]:
    """One seed per sample from ``(seed, name, global index)`` (independent of batching).

    Example:
        >>> sample_seeds(0, "pgd", [0, 1]) == sample_seeds(0, "pgd", [0, 1])
        True
        >>> sample_seeds(0, "pgd", [1]) == sample_seeds(0, "pgd", [0, 1])[1:]
        True
    """
    out = []
    for i in indices:
        digest = hashlib.blake2b(f"{seed}:{name}:{int(i)}".encode(), digest_size=8).digest()
        out.append(int.from_bytes(digest, "little") & ((1 << 63) - 1))
    return out


@contextmanager
def seeded_starts(attack: Attack | Ensemble, seeds: list[int]) -> Iterator[Attack | Ensemble]:
    """Within the block, ``attack`` draws sample ``i``'s random start from ``seeds[i]``.

    An :class:`~ssl_robust.attacks.Ensemble` gets it for every member (members that run on
    the samples left keep each sample's own seed).

    Swaps the attack's threat model for a :class:`SeededStart` around it and restores it
    afterwards (also on errors).

    Example:
        >>> import torch
        >>> from ssl_robust.attacks import EmbedAttack
        >>> from ssl_robust.encoders import VisionTransformer
        >>> enc = VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2)
        >>> x = torch.rand(2, 3, 16, 16)
        >>> attack = EmbedAttack(enc, steps=1)
        >>> with seeded_starts(attack, sample_seeds(0, "embed", [0, 1])):
        ...     a = attack(x)
        >>> with seeded_starts(attack, sample_seeds(0, "embed", [1])):
        ...     b = attack(x[1:])
        >>> torch.allclose(a[1:], b, atol=1e-6), attack.norm
        (True, 'linf')
    """
    members = attack.attacks if isinstance(attack, Ensemble) else [attack]
    originals = [m.norm for m in members]
    for m, original in zip(members, originals, strict=True):
        base = original if isinstance(original, Norm) else NORMS[original]
        setattr(m, "norm", SeededStart(base, seeds))  # noqa: B010 - typed as the str option
    try:
        yield attack
    finally:
        for m, original in zip(members, originals, strict=True):
            setattr(m, "norm", original)  # noqa: B010


def head_of(model: object) -> nn.Module | None:
    """The head of a task model: ``model.adaptor``, also through wrappers holding the task
    model as ``.model`` (:class:`~ssl_robust.adaptors.SlidingWindow`); None if there is none."""
    for _ in range(4):
        head = getattr(model, "adaptor", None)
        if isinstance(head, nn.Module):
            return head
        model = getattr(model, "model", None)
    return None


def _shard(loader: Iterable[Any], rank: int, world: int) -> tuple[Iterable[Any], int]:
    """This rank's batches and the global index of its first sample: a contiguous shard of a
    DataLoader's map-style dataset, or the loader itself in a single process."""
    dataset = getattr(loader, "dataset", None)
    if isinstance(loader, torch.utils.data.DataLoader) and not isinstance(
        dataset, torch.utils.data.IterableDataset
    ):
        n = len(loader.dataset)  # type: ignore[arg-type]
        lo, hi = n * rank // world, n * (rank + 1) // world
        shard = torch.utils.data.DataLoader(
            loader.dataset,
            batch_size=loader.batch_size or 1,
            sampler=range(lo, hi),
            collate_fn=loader.collate_fn,
            num_workers=loader.num_workers,
            pin_memory=loader.pin_memory,
        )
        return shard, lo
    if world > 1:
        raise _checks.SSLRobustValueError(
            "under torch.distributed evaluate needs a DataLoader over a map-style dataset (it "
            f"gives each rank its shard); got {type(loader).__name__}"
        )
    return loader, 0


def _batches(
    loader: Iterable[Any], rank: int, world: int
) -> Iterator[tuple[list[int], Tensor, Any]]:
    """(global indices, images, batch) for this rank's batches (see :func:`_shard`)."""
    source, start = _shard(loader, rank, world)
    for batch in source:
        images, _ = unpack_batch(batch, where="evaluate's loader")
        yield list(range(start, start + len(images))), images, batch
        start += len(images)


class _Timed:
    """Runs an attack on a batch with per-sample seeded starts, adding up its time."""

    def __init__(self, seconds: dict[str, float], seed: int, indices: list[int]) -> None:
        self.seconds, self.seed, self.indices = seconds, seed, indices

    def __call__(self, name: str, attack: Attack | Ensemble, x: Tensor, target: Any) -> Tensor:
        start = time.perf_counter()
        with seeded_starts(attack, sample_seeds(self.seed, name, self.indices)):
            adv = attack(x, target).detach()
        self.seconds[name] += time.perf_counter() - start
        return adv


class _Keeper:
    """Appends the first ``n`` rows of a batch tensor to ``store[key]`` (nothing when n = 0)."""

    def __init__(self, store: dict[str, list[Tensor]], n: int) -> None:
        self.store, self.n = store, n

    def __call__(
        self, key: str, value: Tensor, transform: Callable[[Tensor], Tensor] | None = None
    ) -> None:
        if self.n:
            rows = value[: self.n].detach()
            self.store.setdefault(key, []).append((transform(rows) if transform else rows).cpu())


def _stack(rows: list[Tensor]) -> Tensor:
    """Concatenate kept batches; images of different sizes are padded at the bottom/right
    (0 for images and depth, 255 — the ignore index — for integer masks and labels)."""
    if len({tuple(r.shape[1:]) for r in rows}) <= 1:
        return torch.cat(rows)
    h = max(int(r.shape[-2]) for r in rows)
    w = max(int(r.shape[-1]) for r in rows)
    fill = [255 if not r.is_floating_point() else 0 for r in rows]
    padded = [
        torch.nn.functional.pad(r, (0, w - r.shape[-1], 0, h - r.shape[-2]), value=v)
        for r, v in zip(rows, fill, strict=True)
    ]
    return torch.cat(padded)


def _new_metric(metric: MetricLike | None, spec: TaskSpec, info: DatasetInfo) -> Metric[Any]:
    if metric is None:
        m = spec.make_metric(info)
    elif isinstance(metric, Metric):
        m = copy.deepcopy(metric)
        m.reset()
    elif callable(metric):
        m = metric()
    else:
        raise _checks.SSLRobustTypeError(
            f"metric must be a Metric or a callable returning one; got {type(metric).__name__}"
        )
    return m


def evaluate(
    models: nn.Module | Mapping[str, nn.Module],
    loader: Iterable[Any],
    *,
    attacks: Mapping[str, AttackLike] | None = None,
    task: str | None = None,
    info: DatasetInfo | None = None,
    metric: MetricLike | None = None,
    seed: int = 0,
    keep: int = 0,
    device: str | torch.device | None = None,
    progress: bool = False,
    desc: str = "evaluate",
) -> EvalResult:
    """Evaluate task models clean and under attacks, streaming over ``loader``.

    Per batch: each attack runs (an Attack instance once for all models, a factory once per
    model), every model predicts on the clean and on each attacked batch, and the metrics are
    updated; nothing else is kept but the first ``keep`` samples. Random starts are drawn per
    sample from ``(seed, attack name, global index)`` (:class:`SeededStart`), so results do not
    depend on the batch size, on where a sample falls in a batch, or on the number of ranks.
    Under an initialized ``torch.distributed`` group each rank takes a contiguous shard of the
    DataLoader's dataset (the DataLoader's sampler is not used; its batch size, collate
    function and workers are), and the metrics are summed over ranks: call it on every rank.

    Args:
        models: a task model (images → logits / depth, e.g. a
            :class:`~ssl_robust.adaptors.TaskModel`) or a mapping name → model (a single model
            is named ``"model"``).
        loader: a DataLoader (or any re-iterable) of dict batches of
            :class:`~ssl_robust.data.Sample` s, ``(images, target)`` pairs
            (:func:`~ssl_robust.data.unpack_batch`).
        attacks: name → an :class:`~ssl_robust.attacks.Attack` (run once per batch, scored by
            every model; an EmbedAttack gets no target, other attacks the first model's
            target) or a factory ``model -> Attack`` (one attack per model, given that model's
            target).
        task: the task of every model; default: each model's ``adaptor.task``.
        info: dataset facts for the default metrics (classes, ignore index, depth range);
            default: read from each model's head.
        metric: a :class:`~ssl_robust.metrics.Metric` (copied per model and condition) or a
            factory; default: the task's metric (:attr:`~ssl_robust.tasks.TaskSpec.make_metric`).
        seed: seed of the per-sample random starts.
        keep: number of leading samples (global order) whose images, attacked images and
            predictions are returned in ``kept`` (for galleries).
        device: where batches go; default: the device of the first model's parameters.
        progress: a tqdm bar over batches (rank 0, when tqdm is installed).
        desc: the bar's label.

    Returns:
        An :class:`EvalResult`.

    Raises:
        SSLRobustValueError: unknown task, batches without a model's target key (the keys
            present are listed), a non-DataLoader source under torch.distributed.
        SSLRobustTypeError: models or attacks of the wrong type.

    Example:
        >>> import torch
        >>> from ssl_robust import PGD, EmbedAttack, LinearClassifier, TaskModel, evaluate
        >>> from ssl_robust.data import create_dataset
        >>> from ssl_robust.encoders import VisionTransformer
        >>> enc = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
        >>> model = TaskModel(enc, LinearClassifier(32, 4)).eval()
        >>> data = create_dataset("shapes", split="val", size=8, image_size=32)
        >>> loader = torch.utils.data.DataLoader(data, batch_size=4)
        >>> res = evaluate(model, loader, attacks={
        ...     "embed": EmbedAttack(enc, steps=2),
        ...     "pgd": lambda m: PGD(m, steps=2)})
        >>> sorted(res.headline["model"]), res.samples
        (['clean', 'embed', 'pgd'], 8)
        >>> res.headline["model"]["pgd"] <= res.headline["model"]["clean"]
        True
    """
    named = {"model": models} if isinstance(models, nn.Module) else dict(models)
    if not named:
        raise _checks.SSLRobustValueError("evaluate needs at least one model")
    for name, model in named.items():
        if not callable(model):
            raise _checks.SSLRobustTypeError(
                f"models[{name!r}] must be a model (nn.Module); got {type(model).__name__}"
            )
    attacks = dict(attacks or {})
    for name, atk in attacks.items():
        if name == "clean" or not (isinstance(atk, (Attack, Ensemble)) or callable(atk)):
            raise _checks.SSLRobustTypeError(
                f"attacks[{name!r}] must be an Attack or a factory model -> Attack (and not "
                f"named 'clean'); got {type(atk).__name__}"
            )
    _checks.check_int("keep", keep, minimum=0)
    specs: dict[str, TaskSpec] = {}
    for name, model in named.items():
        task_name = task if task is not None else getattr(head_of(model), "task", None)
        if task_name is None:
            raise _checks.SSLRobustValueError(
                f"cannot tell the task of models[{name!r}] (no adaptor.task); pass task="
            )
        specs[name] = get_task(str(task_name))
    for n, m in named.items():  # a head with fewer classes than the data: refused up front
        head = head_of(m)
        if head is not None:
            check_head_classes(head, loader if info is None else info, task=specs[n].name)
    infos = {
        n: info if info is not None else specs[n].head_info(head_of(m) or m)
        for n, m in named.items()
    }
    if device is None:
        model0 = next(iter(named.values()))
        params = list(model0.parameters()) if isinstance(model0, nn.Module) else []
        dev = params[0].device if params else torch.device("cpu")
    else:
        dev = torch.device(device)
    conditions = ["clean", *attacks]
    metrics = {n: {c: _new_metric(metric, specs[n], infos[n]) for c in conditions} for n in named}
    per_model: dict[str, dict[str, Attack]] = {n: {} for n in named}
    kept: dict[str, dict[str, list[Tensor]]] = {n: {} for n in named}
    seconds = dict.fromkeys(attacks, 0.0)
    rank, world = rank_world()
    first = next(iter(named))
    total = 0
    bar = progress_bar(None, desc, enabled=progress, unit="batch")
    try:
        for indices, images, batch in _batches(loader, rank, world):
            x = _checks.check_image_tensor(images).to(dev)
            targets = {
                n: unpack_batch(batch, target=specs[n].target_key, where="evaluate's loader")[1]
                for n in named
            }
            targets = {n: t.to(dev) if isinstance(t, Tensor) else t for n, t in targets.items()}
            total += len(indices)
            n_keep = sum(i < keep for i in indices)
            timed = _Timed(seconds, seed, indices)
            shared = {
                aname: timed(
                    aname, atk, x, None if isinstance(atk, EmbedAttack) else targets[first]
                )
                for aname, atk in attacks.items()
                if isinstance(atk, (Attack, Ensemble))
            }
            for mname, model in named.items():
                tgt = targets[mname]
                advs: dict[str, Tensor] = {"clean": x}
                for aname, atk in attacks.items():
                    if aname in shared:
                        advs[aname] = shared[aname]
                        continue
                    if aname not in per_model[mname]:
                        per_model[mname][aname] = atk(model)  # type: ignore[call-arg,arg-type,assignment]
                    advs[aname] = timed(aname, per_model[mname][aname], x, tgt)
                keep_now = _Keeper(kept[mname], n_keep)
                keep_now("images", x)
                keep_now("target", tgt)
                for cond, adv in advs.items():
                    with torch.no_grad():
                        pred = model(adv)
                    metrics[mname][cond].update(pred, tgt)
                    if cond != "clean":
                        keep_now(f"adv/{cond}", adv)
                    keep_now(f"pred/{cond}", pred, specs[mname].predicted)
            tick(bar)
    finally:
        if bar is not None:
            bar.close()
    values: dict[str, dict[str, Any]] = {n: {} for n in named}
    headline: dict[str, dict[str, float]] = {n: {} for n in named}
    for mname in named:
        for cond in conditions:
            m = metrics[mname][cond]
            move = getattr(m, "to", None)
            if callable(move):  # every rank's state on the device the backend reduces on
                move(dev)
            values[mname][cond] = m.compute()
            headline[mname][cond] = specs[mname].headline(values[mname][cond])
    counts = torch.tensor([total], dtype=torch.long, device=dev)
    if world > 1:
        torch.distributed.all_reduce(counts)
    return EvalResult(
        values=values,
        headline=headline,
        kept={n: {k: _stack(v) for k, v in kept[n].items()} for n in named},
        samples=int(counts.item()),
        seconds=seconds,
        world_size=world,
    )
