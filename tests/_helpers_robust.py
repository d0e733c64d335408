"""Helpers for the RobustTrainer tests: tiny heads and dict batches, and a torchrun worker.

``python -m torch.distributed.run --nproc_per_node 2 tests/_helpers_robust.py ddp OUT`` and
``python tests/_helpers_robust.py single OUT`` train the same deterministic multi-task run on
2 ranks (global batch split) and on 1 rank, and write the student's weights.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _helpers_deacl import synthetic_images
from conftest import tiny_vit

from ssl_robust.adaptors import LinearClassifier, LinearDepther, LinearSegmenter
from ssl_robust.attacks import PGD, DepthPGD
from ssl_robust.defenses import FARE, RobustConfig, RobustTrainer, TaskAT


def heads(seed: int = 0, dim: int = 32) -> dict[str, nn.Module]:
    """One small head per task (4 classes, 3 segmentation classes, 8 depth bins)."""
    torch.manual_seed(seed)
    return {
        "classification": LinearClassifier(dim, 4),
        "segmentation": LinearSegmenter(dim, 3),
        "depth": LinearDepther(dim, bins=8),
    }


def batch(n: int = 4, *, seed: int = 0) -> dict[str, Tensor]:
    """A dict batch carrying label, mask and depth for the same 16×16 images."""
    g = torch.Generator().manual_seed(seed)
    return {
        "image": synthetic_images(n, seed=seed),
        "label": torch.randint(0, 4, (n,), generator=g),
        "mask": torch.randint(0, 3, (n, 16, 16), generator=g),
        "depth": 0.5 + 4 * torch.rand(n, 16, 16, generator=g),
    }


def _trainer(rank_seed: int) -> RobustTrainer:
    """A deterministic multi-task run: FARE with eps 0 (plain distillation) and TaskAT whose
    PGD starts at the clean image (no random start), co-trained heads, no augmentation."""
    hs = heads()
    task_at = TaskAT(
        heads={"classification": hs["classification"], "depth": hs["depth"]},
        attacks={
            "classification": lambda m: PGD(
                m, eps=4 / 255, step_size=2 / 255, steps=2, random_start=False
            ),
            "depth": lambda m: DepthPGD(
                m, eps=2 / 255, step_size=1 / 255, steps=1, random_start=False
            ),
        },
        train_heads=True,
        head_lr=0.01,
    )
    return RobustTrainer(
        tiny_vit(rank_seed),
        teacher=tiny_vit(0),
        objectives=[FARE(tokens="cls+patch", eps=0.0, steps=1), task_at],
        config=RobustConfig(epochs=1, warmup_epochs=0, augment=False, lr=0.01),
    )


def _data() -> list[dict[str, Tensor]]:
    b = batch(8, seed=3)
    return [{k: v[i : i + 1].squeeze(0) for k, v in b.items()} for i in range(8)]


def _save(trainer: RobustTrainer, path: Path) -> None:
    state = {f"student.{k}": v for k, v in trainer.student.state_dict().items()}
    head = trainer.objectives[1].heads["depth"]  # type: ignore[attr-defined]
    state.update({f"head.{k}": v for k, v in head.state_dict().items()})
    torch.save(state, path)


def _single(out: Path) -> None:
    torch.set_num_threads(1)
    trainer = _trainer(0)
    loader = torch.utils.data.DataLoader(_data(), batch_size=8)  # type: ignore[arg-type]
    trainer.fit(loader, progress=False)
    _save(trainer, out / "single.pt")


def _ddp(out: Path) -> None:
    import torch.distributed as dist
    from torch.utils.data import DataLoader, DistributedSampler

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    trainer = _trainer(rank)  # rank 1 starts elsewhere: DDP makes the students equal
    data = _data()
    sampler = DistributedSampler(data, shuffle=False)  # type: ignore[arg-type]
    loader = DataLoader(data, batch_size=4, sampler=sampler)  # type: ignore[arg-type]
    trainer.fit(loader, progress=False)
    _save(trainer, out / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    mode, folder = sys.argv[1], Path(sys.argv[2])
    {"single": _single, "ddp": _ddp}[mode](folder)
