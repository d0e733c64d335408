"""Robust fine-tuning inside the benchmark (DeACL, FARE, multi-task): fine-tuning an encoder
entry and its per-epoch robustness records (the paper's Fig. 2)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .. import _checks
from ..attacks import EmbedAttack
from ..data.base import SampleDataset
from ..encoders import Encoder
from ..evaluation import sample_seeds, seeded_starts
from ..runtime import global_batch_loader, is_main
from .context import RunContext
from .data import open_dataset
from .spec import DatasetSpec, EncoderSpecEntry

__all__ = ["DeACLHistory", "deacl_encoder", "defended_encoder", "quick_probe"]


def _stack(dataset: SampleDataset, key: str | None) -> tuple[Tensor, Tensor | None]:
    samples = [dataset[i] for i in range(len(dataset))]
    images = torch.stack([s["image"] for s in samples])
    if key is None or not samples or key not in samples[0]:
        return images, None
    return images, torch.stack([s[key] for s in samples])  # type: ignore[literal-required]


class DeACLHistory:
    """Per-epoch robustness of the student during DeACL (a ``DeACLTrainer.fit`` callback).

    Records, on ``images``: the student's clean alignment with the teacher, the cosine between
    its adversarial and clean CLS embeddings under EmbedAttack, and with ``labels`` the
    accuracy of a quick linear probe (fitted on ``probe_data``) clean and attacked.

    Args:
        name: the encoder entry's name (the records' ``encoder``).
        teacher: the frozen base encoder.
        images: evaluation images (N, 3, H, W) in [0, 1].
        labels: their labels (N,), or None.
        probe_data: ``(images, labels)`` the probe is fitted on, or None.
        attack_options: EmbedAttack keywords (eps, step_size, steps, random_start).
        seed: seed of the per-sample random starts.
        device: where to compute.
        record: called with each record (e.g. the results store's ``set_history``).
    """

    def __init__(
        self,
        name: str,
        teacher: Encoder,
        images: Tensor,
        labels: Tensor | None,
        probe_data: tuple[Tensor, Tensor] | None,
        *,
        attack_options: dict[str, Any],
        seed: int,
        device: torch.device,
        record: Callable[[dict[str, Any]], None],
    ) -> None:
        self.name, self.teacher = name, teacher
        self.images, self.labels, self.probe_data = images, labels, probe_data
        self.attack_options, self.seed, self.device = attack_options, seed, device
        self.record = record

    def __call__(self, epoch: int, student: nn.Module) -> None:
        inner = getattr(student, "module", student)  # unwrap DistributedDataParallel
        enc: nn.Module = inner if isinstance(inner, nn.Module) else student
        enc.eval()
        x = self.images.to(self.device)
        with torch.no_grad():
            clean = enc(x).cls
            teach = self.teacher(x).cls
        attack = EmbedAttack(enc, distance="cosine", **self.attack_options)
        with seeded_starts(attack, sample_seeds(self.seed, "deacl", range(len(x)))):
            adv = attack(x)
        with torch.no_grad():
            adv_emb = enc(adv).cls
        rec: dict[str, Any] = {
            "encoder": self.name,
            "epoch": epoch,
            "clean_alignment": float(torch.cosine_similarity(clean, teach, dim=1).mean()),
            "embed_cosine": float(torch.cosine_similarity(adv_emb, clean, dim=1).mean()),
        }
        if self.probe_data is not None and self.labels is not None:
            probe = quick_probe(enc, *self.probe_data, self.device)
            y = self.labels.to(self.device)
            with torch.no_grad():
                rec["clean_accuracy"] = float((probe(clean).argmax(1) == y).float().mean())
                rec["embed_accuracy"] = float((probe(adv_emb).argmax(1) == y).float().mean())
        self.record(rec)


def quick_probe(
    enc: nn.Module, images: Tensor, labels: Tensor, device: torch.device
) -> Callable[[Tensor], Tensor]:
    """A linear probe fitted on frozen CLS features (full batch Adam), for DeACL curves."""
    with torch.no_grad():
        feats = torch.cat([enc(chunk.to(device)).cls for chunk in torch.split(images, 128)])
    mean, std = feats.mean(0), feats.std(0) + 1e-6
    gen = torch.Generator().manual_seed(0)
    lin = nn.Linear(feats.shape[1], int(labels.max()) + 1)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(lin.weight.shape, generator=gen) * 0.01)
        lin.bias.zero_()
    lin = lin.to(device)
    opt = torch.optim.Adam(lin.parameters(), lr=1e-2)
    y = labels.to(device)
    with torch.enable_grad():
        for _ in range(200):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(lin((feats - mean) / std), y)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
    return lambda f: lin((f - mean) / std)


def _teacher_heads(
    ctx: RunContext, entry: EncoderSpecEntry, base: Encoder, ds: DatasetSpec, tasks: tuple[str, ...]
) -> dict[str, nn.Module]:
    """Heads fitted on the base (teacher) encoder, as for its own evaluation (the same cache
    file), copied so that fine-tuning never touches the base's evaluation heads."""
    from ..tasks import get_task
    from .data import dataset_info
    from .heads import trained_model

    assert entry.deacl is not None
    info = dataset_info(open_dataset(ds, ds.train_split, subset=1, seed=ctx.spec.seed))
    missing = [t for t in tasks if t not in info.tasks]
    if missing:
        raise _checks.SSLRobustValueError(
            f"encoder {entry.name!r}: multitask fine-tuning on dataset {ds.name!r} needs "
            f"{missing} targets; it has {list(info.tasks)}"
        )
    heads: dict[str, nn.Module] = {}
    for task in tasks:
        model = trained_model(ctx, entry.deacl.base, base, ds, get_task(task).name, info)
        inner: Any = getattr(model, "model", model)  # a SlidingWindow wraps the TaskModel
        heads[task] = copy.deepcopy(inner.adaptor)
    return heads


def defended_encoder(
    ctx: RunContext, entry: EncoderSpecEntry, base: Encoder, eval_ds: DatasetSpec
) -> Encoder:
    """The robust fine-tuned version of ``base`` (trained once, then loaded from ``out``).

    The method of ``entry.deacl`` (the ``[encoders.defense]`` table) picks the recipe
    (:data:`~ssl_robust.defenses.DEFENSE_METHODS`): ``deacl``, ``fare`` or ``multitask``
    (whose TaskAT heads are the base encoder's heads, fitted on it exactly as for its
    evaluation). The evaluation of the result always fits fresh heads on it. Under
    torch.distributed the student is trained with DistributedDataParallel and a
    DistributedSampler; each rank takes ``batch_size / world_size`` images, so the global
    batch is the configured one.
    """
    from ..defenses.recipes import make_trainer

    if entry.deacl is None:
        raise _checks.SSLRobustValueError(f"encoder {entry.name!r} has no defense settings")
    d = entry.deacl
    exported = ctx.store.out / "encoders" / f"{entry.name}.pt"
    student = copy.deepcopy(base).cpu().requires_grad_(True)
    if d.checkpoint is not None:
        state = torch.load(d.checkpoint, map_location="cpu", weights_only=True)
        student.load_state_dict(state.get("student", state))
        return student
    if exported.exists():
        student.load_state_dict(torch.load(exported, map_location="cpu", weights_only=True))
        return student
    recipe = d.recipe()
    ds = next(x for x in ctx.spec.datasets if x.name == d.dataset)
    heads = _teacher_heads(ctx, entry, base, ds, recipe.tasks_needed())
    train = open_dataset(ds, ds.train_split, subset=d.train_size, seed=ctx.spec.seed)
    loader = global_batch_loader(
        train,
        global_batch=d.batch_size,
        seed=ctx.spec.seed,
        name=f"encoder {entry.name!r}: {d.method}.batch_size",
    )
    trainer = make_trainer(recipe, student.to(ctx.device), heads=heads)
    n = ctx.spec.attack.curve_subset
    ev = open_dataset(
        eval_ds, eval_ds.eval_split, subset=ctx.spec.eval.subset, seed=ctx.spec.eval.seed
    )
    images, labels = _stack(torch.utils.data.Subset(ev, range(min(n, len(ev)))), "label")  # type: ignore[arg-type]
    probe = None
    if labels is not None:
        probe_ds = open_dataset(ds, ds.train_split, subset=512, seed=ctx.spec.seed + 1)
        p_images, p_labels = _stack(probe_ds, "label")
        probe = None if p_labels is None else (p_images, p_labels)
    history = DeACLHistory(
        entry.name,
        base,
        images,
        labels,
        probe,
        attack_options=ctx.attack_options(),
        seed=ctx.spec.seed,
        device=ctx.device,
        record=ctx.store.set_history,
    )
    log = trainer.fit(
        loader,
        checkpoint_dir=ctx.store.out / d.method / entry.name,
        callbacks=[history],
        progress=ctx.progress,
    )
    for rec in log:
        for h in ctx.store.results["deacl_history"]:
            if h["encoder"] == entry.name and h["epoch"] == rec["epoch"]:
                h["loss"] = float(rec["loss"])
    if is_main():
        trainer.export_student(exported)
    ctx.store.save()
    return student


#: The older name of :func:`defended_encoder`.
deacl_encoder = defended_encoder
