"""Helpers for the DeACL tests: synthetic images, a weight hash, and subprocess workers.

Run as a script for the parts that need a fresh process:
``python tests/_helpers_deacl.py resume OUT_DIR`` (resume a 1-epoch checkpoint to 2 epochs) and
``python -m torch.distributed.run --nproc_per_node 2 tests/_helpers_deacl.py ddp OUT_DIR``.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import tiny_vit

from ssl_robust.defenses import DeACLConfig, DeACLTrainer


def synthetic_images(n: int, *, seed: int, size: int = 16) -> torch.Tensor:
    """Smooth random colour fields plus a little noise, in [0, 1] (fixed generator)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    x = F.interpolate(low, size=size, mode="bilinear", align_corners=False)
    return (x + 0.05 * torch.randn(n, 3, size, size, generator=g)).clamp(0, 1)


def weights_hash(model: nn.Module) -> str:
    """SHA-256 of every tensor of the state dict (bit-exact comparison across processes)."""
    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def deacl_toml(out: Path, *, batch_size: int = 8, extra: str = "") -> str:
    """A tiny ``ssl-robust deacl`` config: ``vit_test`` on 16 shapes images, one 1-step epoch
    (``extra``: more lines for the ``[deacl]`` table)."""
    return f"""
out = "{out}"
[encoder]
registry = "vit_test"
[data]
dataset = "shapes"
subset = 16
image_size = 16
batch_size = {batch_size}
options = {{ size = 32 }}
[deacl]
epochs = 1
warmup_epochs = 0
steps = 1
{extra}
"""


#: The small run shared by the resume test and its subprocess.
RESUME_CONFIG = DeACLConfig(steps=2, epochs=3, warmup_epochs=1, lr=0.05)


def resume_batches() -> list[torch.Tensor]:
    return list(synthetic_images(16, seed=5).split(8))


def _resume(out: Path) -> None:
    trainer = DeACLTrainer(tiny_vit(0), config=RESUME_CONFIG)
    trainer.fit(resume_batches(), epochs=2, checkpoint_dir=out, progress=False)
    (out / "resumed.txt").write_text(f"{trainer.epoch} {weights_hash(trainer.student)}")


def _ddp(out: Path) -> None:
    import torch.distributed as dist
    from torch.utils.data import DataLoader, DistributedSampler

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    # Different initial weights per rank: DDP must make the students (and teachers) equal.
    student = tiny_vit(rank)
    data = synthetic_images(16, seed=7)
    sampler = DistributedSampler(data, shuffle=True, seed=0)  # type: ignore[arg-type]
    loader = DataLoader(data, batch_size=4, sampler=sampler)  # type: ignore[arg-type]
    cfg = DeACLConfig(steps=2, epochs=1, warmup_epochs=0)
    trainer = DeACLTrainer(student, config=cfg)
    history = trainer.fit(loader, checkpoint_dir=out / "ckpt", progress=False)
    teacher_hash = weights_hash(trainer.teacher)
    seen = sampler.epoch
    (out / f"rank{rank}.txt").write_text(
        f"{weights_hash(trainer.student)} {teacher_hash} {len(history)} {seen}"
    )
    dist.barrier()  # nobody tears gloo down while a peer still talks to it
    dist.destroy_process_group()


if __name__ == "__main__":
    mode, folder = sys.argv[1], Path(sys.argv[2])
    {"resume": _resume, "ddp": _ddp}[mode](folder)
