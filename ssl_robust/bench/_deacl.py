"""DeACL inside the benchmark: per-epoch robustness records (the paper's Fig. 2)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .. import _checks
from ..attacks import EmbedAttack
from ..encoders import Encoder
from ._io import ImagesOnly, batches, load_tensors, open_dataset
from .spec import DatasetSpec, EncoderSpecEntry, _build

if TYPE_CHECKING:
    from .runner import _Runner

__all__ = ["DeACLHistory", "deacl_encoder", "quick_probe"]


class DeACLHistory:
    """Per-epoch robustness of the student during DeACL (the paper's Fig. 2)."""

    def __init__(
        self, runner: _Runner, entry: EncoderSpecEntry, teacher: Encoder, ds: DatasetSpec
    ) -> None:
        self.runner, self.entry, self.teacher, self.ds = runner, entry, teacher, ds
        data = runner.data(ds)
        n = min(runner.spec.attack.curve_subset, len(data.images))
        self.images = data.images[:n]
        self.labels = data.targets.get("label")
        self.labels = None if self.labels is None else self.labels[:n]
        self.train: tuple[Tensor, Tensor] | None = None
        if self.labels is not None:
            train = open_dataset(ds, ds.train_split, subset=512, seed=runner.spec.seed + 1)
            t = load_tensors(train, list(range(len(train))), ("label",))
            self.train = (t["image"], t["label"])

    def __call__(self, epoch: int, student: nn.Module) -> None:
        r = self.runner
        inner = getattr(student, "module", student)  # unwrap DistributedDataParallel
        enc: nn.Module = inner if isinstance(inner, nn.Module) else student
        enc.eval()
        x = self.images.to(r.device)
        with torch.no_grad():
            clean = enc(x).cls
            teach = self.teacher(x).cls
        attack = EmbedAttack(enc, distance="cosine", **r._attack_opts())
        adv = r.run_attack(attack, self.images, None, f"DeACL epoch {epoch} EmbedAttack")
        with torch.no_grad():
            adv_emb = enc(adv.to(r.device)).cls
        rec: dict[str, Any] = {
            "encoder": self.entry.name,
            "epoch": epoch,
            "clean_alignment": float(torch.cosine_similarity(clean, teach, dim=1).mean()),
            "embed_cosine": float(torch.cosine_similarity(adv_emb, clean, dim=1).mean()),
        }
        if self.train is not None and self.labels is not None:
            probe = quick_probe(enc, *self.train, r.device)
            with torch.no_grad():
                rec["clean_accuracy"] = float(
                    (probe(clean).argmax(1).cpu() == self.labels).float().mean()
                )
                rec["embed_accuracy"] = float(
                    (probe(adv_emb).argmax(1).cpu() == self.labels).float().mean()
                )
        r.results["deacl_history"] = [
            h
            for h in r.results["deacl_history"]
            if not (h["encoder"] == self.entry.name and h["epoch"] == epoch)
        ] + [rec]
        r._save()


def quick_probe(
    enc: nn.Module, images: Tensor, labels: Tensor, device: torch.device
) -> Callable[[Tensor], Tensor]:
    """A linear probe fitted on frozen CLS features (full batch Adam), for DeACL curves."""
    with torch.no_grad():
        feats = torch.cat([enc(images[sl].to(device)).cls for sl in batches(len(images), 128)])
    mean, std = feats.mean(0), feats.std(0) + 1e-6
    lin = nn.Linear(feats.shape[1], int(labels.max()) + 1).to(device)
    opt = torch.optim.Adam(lin.parameters(), lr=1e-2)
    y = labels.to(device)
    with torch.enable_grad():
        for _ in range(200):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(lin((feats - mean) / std), y)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
    return lambda f: lin((f - mean) / std)


def deacl_encoder(runner: _Runner, entry: EncoderSpecEntry, base: Encoder) -> Encoder:
    """The DeACL fine-tuned version of ``base`` (trained once, then loaded from ``out``)."""
    from ..defenses import DeACLConfig, DeACLTrainer

    if entry.deacl is None:
        raise _checks.SSLRobustValueError(f"encoder {entry.name!r} has no deacl settings")
    d = entry.deacl
    exported = runner.out / "encoders" / f"{entry.name}.pt"
    student = copy.deepcopy(base).cpu().requires_grad_(True)
    if d.checkpoint is not None:
        state = torch.load(d.checkpoint, map_location="cpu", weights_only=True)
        student.load_state_dict(state.get("student", state))
        return student
    if exported.exists():
        student.load_state_dict(torch.load(exported, map_location="cpu", weights_only=True))
        return student
    ds = next(x for x in runner.spec.datasets if x.name == d.dataset)
    train = open_dataset(ds, ds.train_split, subset=d.train_size, seed=runner.spec.seed)
    images = ImagesOnly(train)
    sampler: torch.utils.data.Sampler[int] | None = (
        torch.utils.data.distributed.DistributedSampler(images, seed=runner.spec.seed)
        if runner.world > 1
        else None
    )
    loader = torch.utils.data.DataLoader(
        images,
        batch_size=d.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=True,
        generator=torch.Generator().manual_seed(runner.spec.seed),
    )
    config = _build(DeACLConfig, dict(d.config), f"encoders[{entry.name!r}].deacl.config")
    trainer = DeACLTrainer(student.to(runner.device), config=config)
    history = DeACLHistory(runner, entry, base, ds)
    log = trainer.fit(
        loader,
        checkpoint_dir=runner.out / "deacl" / entry.name,
        callbacks=[history],
        progress=runner.progress,
    )
    for rec in log:
        for h in runner.results["deacl_history"]:
            if h["encoder"] == entry.name and h["epoch"] == rec["epoch"]:
                h["loss"] = float(rec["loss"])
    if runner.rank == 0:
        trainer.export_student(exported)
    runner._save()
    return student
