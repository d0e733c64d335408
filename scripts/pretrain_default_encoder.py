"""Pretrain the embedded default encoder (``vit_tiny``) on ``shapes`` with a self-supervised loss.

This script produces ``ssl_robust/assets/vit_tiny_shapes.pt``, the weights that ship inside the
package and that ``create_encoder("vit_tiny_shapes", pretrained=True)`` and the default
``ssl-robust bench`` use. It needs no labels, no downloads and no GPU (about 10–20 minutes on a
2-core CPU for the default settings).

Objective (SimCLR-style, Chen et al. 2020, with a dense term in the spirit of DenseCL):
two views of every image share a random resized crop and differ by independent horizontal
flips, colour jitter and noise.

- image level: InfoNCE between the projected CLS embeddings of the two views (the positive is
  the other view of the same image, the negatives every other image of the batch);
- patch level: InfoNCE between projected patch tokens at the same scene position in the two
  views (flips undone), with the other sampled patches of the batch as negatives.

Run:  python scripts/pretrain_default_encoder.py [--steps 600] [--batch 256] [--out PATH]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align

from ssl_robust.data import create_dataset
from ssl_robust.encoders import create_encoder

ROOT = Path(__file__).resolve().parents[1]


def random_crops(images: Tensor, g: torch.Generator, scale: tuple[float, float]) -> Tensor:
    """Per-sample random resized crops (square, area fraction in ``scale``) back to full size."""
    b, _, h, w = images.shape
    area = scale[0] + (scale[1] - scale[0]) * torch.rand(b, generator=g)
    side = area.sqrt()
    x0 = torch.rand(b, generator=g) * (1 - side) * w
    y0 = torch.rand(b, generator=g) * (1 - side) * h
    boxes = torch.stack(
        [torch.arange(b, dtype=torch.float32), x0, y0, x0 + side * w, y0 + side * h], 1
    )
    return roi_align(images, boxes, output_size=(h, w), aligned=True)


def photometric(images: Tensor, g: torch.Generator) -> Tensor:
    """Brightness / contrast / saturation jitter and a little Gaussian noise, per sample."""
    b = images.shape[0]

    def factor(spread: float) -> Tensor:
        return 1 + spread * (2 * torch.rand(b, 1, 1, 1, generator=g) - 1)

    x = images * factor(0.4)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * factor(0.4) + mean
    grey = x.mean(dim=1, keepdim=True)
    x = (x - grey) * factor(0.4) + grey
    x = x + 0.02 * torch.randn(x.shape, generator=g)
    return x.clamp(0, 1)


def info_nce(a: Tensor, b: Tensor, temperature: float) -> Tensor:
    """Symmetric InfoNCE: row i of ``a`` and row i of ``b`` are positives."""
    a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    logits = a @ b.T / temperature
    target = torch.arange(a.shape[0])
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def projector(dim: int, out: int = 64) -> nn.Module:
    return nn.Sequential(nn.Linear(dim, 256), nn.GELU(), nn.Linear(256, out))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--images", type=int, default=20000, help="size of the shapes train split")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--patches", type=int, default=8, help="patches sampled per image")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out", type=Path, default=ROOT / "ssl_robust" / "assets" / "vit_tiny_shapes.pt"
    )
    a = p.parse_args()

    torch.manual_seed(a.seed)
    g = torch.Generator().manual_seed(a.seed)
    encoder = create_encoder("vit_tiny").train()
    data = create_dataset("shapes", None, "train", size=a.images, image_size=32, seed=a.seed)
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=a.batch,
        shuffle=True,
        drop_last=True,
        num_workers=0,
        generator=torch.Generator().manual_seed(a.seed),
    )
    proj_cls, proj_patch = projector(encoder.embed_dim), projector(encoder.embed_dim)
    params = [*encoder.parameters(), *proj_cls.parameters(), *proj_patch.parameters()]
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.05)
    warmup = max(1, a.steps // 10)

    def lr_at(step: int) -> float:
        if step < warmup:
            return a.lr * (step + 1) / warmup
        return a.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (a.steps - warmup)))

    step, start = 0, time.perf_counter()
    while step < a.steps:
        for batch in loader:
            if step >= a.steps:
                break
            images = batch["image"]
            b = images.shape[0]
            crops = random_crops(images, g, (0.35, 1.0))
            flips = torch.rand(2, b, generator=g) < 0.5
            views = []
            for k in range(2):
                v = photometric(crops, g)
                views.append(torch.where(flips[k].view(b, 1, 1, 1), v.flip(-1), v))
            out = encoder(torch.cat(views))
            cls1, cls2 = out.cls.chunk(2)
            h, w = out.grid
            maps = out.patches.view(2, b, h, w, -1)
            aligned = [
                torch.where(flips[k].view(b, 1, 1, 1), maps[k].flip(2), maps[k]) for k in range(2)
            ]
            idx = torch.randint(0, h * w, (b, a.patches), generator=g)
            rows = torch.arange(b).unsqueeze(1)
            p1 = aligned[0].reshape(b, h * w, -1)[rows, idx].reshape(b * a.patches, -1)
            p2 = aligned[1].reshape(b, h * w, -1)[rows, idx].reshape(b * a.patches, -1)
            loss_cls = info_nce(proj_cls(cls1), proj_cls(cls2), 0.2)
            loss_patch = info_nce(proj_patch(p1), proj_patch(p2), 0.2)
            loss = loss_cls + loss_patch
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 3.0)
            opt.step()
            if step % 20 == 0 or step == a.steps - 1:
                print(
                    f"step {step:4d}/{a.steps} loss_cls {loss_cls.item():.3f} "
                    f"loss_patch {loss_patch.item():.3f} lr {lr_at(step):.2e} "
                    f"{time.perf_counter() - start:.0f}s",
                    flush=True,
                )
            step += 1

    a.out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
    torch.save(state, a.out)
    print(f"saved {a.out} ({a.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
