"""Everything ssl_normals adds to ssl_robust, registered on import (the entry point's target).

- task ``normals``: per-pixel unit normals, cosine loss, mean angular error (degrees, ↓);
- dataset ``shapes_normals``: ssl_robust's synthetic ``shapes`` scenes, with normals derived
  from their depth maps;
- encoder ``normals_vit``: a one-block ViT for quick runs;
- attack column ``apgd_task``: APGD on the task loss (ssl_robust's TaskAttack);
- defense ``noise_distill``: distil the frozen encoder on noisy images.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_robust.adaptors import Adaptor
from ssl_robust.bench import DefenseSpec, SuiteSpec, register_defense, register_suite
from ssl_robust.data import SampleDataset, ShapesDataset, register_dataset
from ssl_robust.encoders import Encoder, VisionTransformer, read_checkpoint, register_encoder
from ssl_robust.metrics import Metric
from ssl_robust.tasks import TaskAttack, TaskSpec, register_task

__all__ = ["TASK", "MeanAngularError", "NormalsHead", "ShapesNormals", "normals_from_depth"]


# ----------------------------------------------------------------------------- the task
class NormalsHead(Adaptor):
    """A 1×1 convolution on the patch map to 3 channels, upsampled, unit length per pixel."""

    task = "normals"

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.conv = nn.Conv2d(embed_dim, 3, 1)

    def forward(self, features: Any, size: tuple[int, int]) -> Tensor:
        b, _, d = features.patches.shape
        grid = features.patches.transpose(1, 2).reshape(b, d, *features.grid)
        out = F.interpolate(self.conv(grid), size=size, mode="bilinear", align_corners=False)
        return F.normalize(out, dim=1)


def cosine_loss(pred: Tensor, target: Tensor, info: Any) -> Tensor:
    """Per image: the mean of 1 − cos(pred, target) over pixels with a normal."""
    valid = (target.norm(dim=1) > 0.5).float()
    cos = F.cosine_similarity(pred.float(), target.float(), dim=1)
    return ((1 - cos) * valid).flatten(1).sum(1) / valid.flatten(1).sum(1).clamp_min(1)


class MeanAngularError(Metric[Tensor]):
    """Mean angle between predicted and true normals, in degrees, over all valid pixels."""

    higher_is_better = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("degrees", torch.zeros((), dtype=torch.float64))
        self.add_state("pixels", torch.zeros((), dtype=torch.long))

    def update(self, pred: Tensor, target: Tensor) -> None:
        valid = target.norm(dim=1) > 0.5
        cos = F.cosine_similarity(pred.double(), target.double(), dim=1).clamp(-1, 1)
        self.accumulate("degrees", torch.rad2deg(torch.acos(cos))[valid].sum())
        self.accumulate("pixels", valid.sum())

    def _compute(self, state: dict[str, Tensor]) -> Tensor:
        return state["degrees"] / state["pixels"].clamp_min(1).double()


TASK = register_task(
    TaskSpec(
        name="normals",
        target_key="normals",
        make_head=lambda dim, info, **kw: NormalsHead(dim, **kw),
        loss=cosine_loss,
        make_metric=lambda info: MeanAngularError(),
        higher_is_better=False,
        dense=True,
        metric_key="angular_error",
        metric_label="Angular error (°)",
        metric_text="mean angular error",
    )
)


# ----------------------------------------------------------------------------- the dataset
def normals_from_depth(depth: Tensor, scale: float = 8.0) -> Tensor:
    """Unit normals (3, H, W) of a depth map (H, W): normalize(−∂z/∂x, −∂z/∂y, 1/scale)."""
    z = F.pad(depth[None, None].float(), (1, 1, 1, 1), mode="replicate")[0, 0]
    dzdx = (z[1:-1, 2:] - z[1:-1, :-2]) / 2
    dzdy = (z[2:, 1:-1] - z[:-2, 1:-1]) / 2
    n = torch.stack([-dzdx, -dzdy, torch.full_like(dzdx, 1.0 / scale)])
    return F.normalize(n, dim=0)


class ShapesNormals(SampleDataset):
    """ssl_robust's ``shapes`` scenes with a ``normals`` target (3, H, W) next to ``depth``."""

    def __init__(self, split: str, *, seed: int = 0, **options: Any) -> None:
        super().__init__(transform=None)
        self.base = ShapesDataset(split=split, seed=seed, **options)  # type: ignore[arg-type]
        self.info = dataclasses.replace(
            self.base.info, name="shapes_normals", tasks=("normals", "depth")
        )

    def __len__(self) -> int:
        return len(self.base)

    def _load(self, index: int) -> Any:
        s = self.base[index]
        depth = s["depth"].as_subclass(Tensor)
        return {"image": s["image"], "depth": depth, "normals": normals_from_depth(depth)}


register_dataset(
    "shapes_normals",
    lambda root, split, *, transform=None, seed=0, **kw: ShapesNormals(split, seed=seed, **kw),
    needs_root=False,
    options=("size", "image_size", "max_objects", "contrast"),
    description="shapes scenes with normals derived from depth (ssl_normals)",
)


# ----------------------------------------------------------------------------- the encoder
def _normals_vit(
    *, checkpoint_path: str | None = None, pretrained: bool = False, **kw: Any
) -> Encoder:
    if pretrained:
        raise ValueError("normals_vit has no pretrained weights; pass checkpoint_path=")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        enc = VisionTransformer(
            **{"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2, **kw}
        )
    if checkpoint_path is not None:
        enc.load_state_dict(read_checkpoint(checkpoint_path))
    return enc


register_encoder("normals_vit", _normals_vit, description="one-block ViT, 32×32 (ssl_normals)")


# ----------------------------------------------------------------------------- attack column
def _apgd_task(model: nn.Module, task: TaskSpec, info: Any, *, eps: float, settings: Any) -> Any:
    return TaskAttack(
        model, spec=task, info=info, eps=eps, steps=max(settings.steps, 1), schedule="apgd"
    )


register_suite(SuiteSpec("apgd_task", _apgd_task, label="APGD (task loss)"))


# ----------------------------------------------------------------------------- the defense
def _noise_distill(ctx: Any, entry: Any, base: Encoder, eval_ds: Any) -> Encoder:
    """Fine-tune a copy of ``base`` so its tokens on noisy images match the frozen base's on
    clean ones (config: ``steps``, ``sigma``, ``lr``); cached under ``out/encoders``."""
    from ssl_robust.bench.data import open_dataset

    d = entry.deacl
    cfg = {"steps": 10, "sigma": 0.03, "lr": 1e-3, **dict(d.config)}
    student = copy.deepcopy(base).cpu().requires_grad_(True)
    cached = Path(ctx.store.out) / "encoders" / f"{entry.name}.pt"
    if cached.exists():
        student.load_state_dict(torch.load(cached, map_location="cpu", weights_only=True))
        return student
    ds = next(x for x in ctx.spec.datasets if x.name == d.dataset)
    data = open_dataset(ds, ds.train_split, subset=d.train_size, seed=ctx.spec.seed)
    loader = torch.utils.data.DataLoader(data, batch_size=d.batch_size, shuffle=False)
    teacher = copy.deepcopy(base).cpu().eval().requires_grad_(False)
    opt = torch.optim.SGD(student.parameters(), lr=float(cfg["lr"]))
    gen = torch.Generator().manual_seed(ctx.spec.seed)
    step = 0
    while step < int(cfg["steps"]):
        for batch in loader:
            x = batch["image"].as_subclass(Tensor)
            noisy = (x + float(cfg["sigma"]) * torch.randn(x.shape, generator=gen)).clamp(0, 1)
            with torch.no_grad():
                t = teacher(x)
            s = student(noisy)
            loss = (s.cls - t.cls).pow(2).mean() + (s.patches - t.patches).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step >= int(cfg["steps"]):
                break
    cached.parent.mkdir(parents=True, exist_ok=True)
    torch.save(student.state_dict(), cached)
    return student.eval()


register_defense(
    DefenseSpec(
        "noise_distill",
        _noise_distill,
        description="distil the frozen encoder on noisy images (ssl_normals)",
    )
)
