"""Pretrain the embedded default encoder (``vit_tiny``) on ``shapes`` with a self-supervised loss.

This script produces ``ssl_robust/assets/vit_tiny_shapes.pt``, the weights that ship inside the
package and that ``create_encoder("vit_tiny_shapes", pretrained=True)`` and the default
``ssl-robust bench`` use. It needs no labels, no downloads and no GPU.

Objective (no labels): every image gives two views, independent random resized crops with
random horizontal flips, and 40 % of each view's patch embeddings are replaced by a learned
mask vector before the transformer.

- image level (SimCLR, Chen et al. 2020): InfoNCE between the MLP-projected CLS embeddings of
  the two views (the positive is the other view of the same image, the negatives every other
  view of the batch), temperature 0.2;
- patch level (SimMIM, Xie et al. 2022): a linear decoder regresses the pixels of every masked
  patch from its output token (mean squared error on standardized pixels).

The scenes are rendered with ``contrast=0.5``. The shipped weights were made with the defaults
(300 steps of 128 images, AdamW lr 1e-3 with warm-up and cosine decay, seed 0), one CPU thread
(``OMP_NUM_THREADS=1``), in about 4 minutes; other thread counts or hardware give slightly
different floating-point results.

Run:  OMP_NUM_THREADS=1 python scripts/pretrain_default_encoder.py [--steps 300] [--out PATH]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

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


def info_nce(a: Tensor, b: Tensor, temperature: float) -> Tensor:
    """Symmetric InfoNCE: row i of ``a`` and row i of ``b`` are positives."""
    a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    logits = a @ b.T / temperature
    target = torch.arange(a.shape[0])
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def encode_masked(
    encoder: Any, images: Tensor, mask: Tensor, mask_vec: Tensor
) -> tuple[Tensor, Tensor]:
    """Run the ViT with the patch embeddings at ``mask`` (B, N) replaced by ``mask_vec``."""
    x = encoder.normalize(images)
    tokens = encoder.patch_embed(x)
    tokens = torch.where(mask.unsqueeze(-1), mask_vec.to(tokens.dtype), tokens)
    b = tokens.shape[0]
    h, w = images.shape[-2] // encoder.patch_size, images.shape[-1] // encoder.patch_size
    t = torch.cat((encoder.cls_token.expand(b, -1, -1), tokens), dim=1)
    t = t + encoder.interpolate_pos_encoding(h, w, t.dtype)
    for blk in encoder.blocks:
        t = blk(t)
    t = encoder.norm(t)
    return t[:, 0], t[:, 1:]


def patchify(images: Tensor, p: int) -> Tensor:
    """(B, 3, H, W) → (B, N, 3·p·p), row-major patches (the ViT's token order)."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // p) * (w // p), c * p * p)


def projector(dim: int, out: int = 64) -> nn.Module:
    return nn.Sequential(nn.Linear(dim, 256), nn.GELU(), nn.Linear(256, out))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--images", type=int, default=20000, help="size of the shapes train split")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--contrast", type=float, default=0.5, help="shapes contrast (see data docs)")
    p.add_argument("--mask-ratio", type=float, default=0.4, help="share of masked patches")
    p.add_argument(
        "--out", type=Path, default=ROOT / "ssl_robust" / "assets" / "vit_tiny_shapes.pt"
    )
    a = p.parse_args()

    torch.manual_seed(a.seed)
    g = torch.Generator().manual_seed(a.seed)
    encoder = create_encoder("vit_tiny").train()
    data = create_dataset(
        "shapes",
        None,
        "train",
        size=a.images,
        image_size=32,
        scene_seed=a.seed,
        contrast=a.contrast,
    )
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=a.batch,
        shuffle=True,
        drop_last=True,
        num_workers=0,
        generator=torch.Generator().manual_seed(a.seed),
    )
    proj_cls = projector(encoder.embed_dim)
    decoder = nn.Linear(encoder.embed_dim, 3 * encoder.patch_size**2)
    mask_vec = nn.Parameter(torch.zeros(encoder.embed_dim))
    params = [
        *encoder.parameters(),
        *proj_cls.parameters(),
        *decoder.parameters(),
        mask_vec,
    ]
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
            views = [random_crops(images, g, (0.35, 1.0)) for _ in range(2)]
            flips = torch.rand(2, b, generator=g) < 0.5
            views = [
                torch.where(flips[k].view(b, 1, 1, 1), views[k].flip(-1), views[k])
                for k in range(2)
            ]
            n = (images.shape[-1] // encoder.patch_size) ** 2
            mask = torch.rand(2 * b, n, generator=g) < a.mask_ratio
            both = torch.cat(views)
            cls, patches = encode_masked(encoder, both, mask, mask_vec)
            cls1, cls2 = cls.chunk(2)
            loss_cls = info_nce(proj_cls(cls1), proj_cls(cls2), 0.2)
            target = (patchify(both, encoder.patch_size) - 0.5) / 0.25
            pred = decoder(patches)
            loss_patch = (pred - target)[mask].pow(2).mean()
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
