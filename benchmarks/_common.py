"""Shared set-up for the benchmark scripts: a small ViT classifier fitted on generated data."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_robust.adaptors import LinearClassifier, TaskModel
from ssl_robust.data import create_dataset
from ssl_robust.encoders import VisionTransformer


def small_vit(dtype: torch.dtype = torch.float32) -> VisionTransformer:
    """ViT-Tiny-like encoder on 32×32 images (patch 4: 64 tokens, D=192, 6 blocks)."""
    torch.manual_seed(0)
    vit = VisionTransformer(img_size=32, patch_size=4, embed_dim=192, depth=6, num_heads=3)
    return vit.to(dtype).eval()


class Counter(nn.Module):
    """Counts the images the wrapped model sees, with and without an input gradient."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.grad = 0
        self.fwd = 0

    @property
    def seen(self) -> int:
        """Every image seen (forwards with and without an input gradient)."""
        return self.grad + self.fwd

    def forward(self, x: Tensor) -> Any:
        if torch.is_grad_enabled() and x.requires_grad:
            self.grad += x.shape[0]
        else:
            self.fwd += x.shape[0]
        return self.model(x)

    def reset(self) -> None:
        self.grad = self.fwd = 0


def shapes(n: int, split: str) -> dict[str, Tensor]:
    """``n`` shapes scenes at 32 px and contrast 0.35 (the default benchmark's), one batch."""
    data = create_dataset("shapes", split=split, size=n, image_size=32, contrast=0.35)
    return next(iter(torch.utils.data.DataLoader(data, batch_size=n)))


def shapes_probe(encoder: nn.Module) -> tuple[TaskModel, int]:
    """A linear probe on the frozen encoder's CLS token, fitted (not adversarially) on 1024
    shapes labels: Adam 1e-2, 300 full-batch steps on cached features, seed 0."""
    train = shapes(1024, "train")
    classes = int(train["label"].max()) + 1
    with torch.no_grad():
        feats = torch.cat([encoder(train["image"][i : i + 256]).cls for i in range(0, 1024, 256)])
    torch.manual_seed(0)
    head = LinearClassifier(encoder.embed_dim, classes)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        F.cross_entropy(head.linear(feats), train["label"]).backward()
        opt.step()
    return TaskModel(encoder, head).eval(), classes


def timing_parser(doc: str | None, *, clock: str) -> argparse.ArgumentParser:
    """The options the attack-timing scripts share (``--batch --steps --repeats --threads
    --clock --device --bf16``); ``clock``: the default of ``--clock``."""
    p = argparse.ArgumentParser(description=(doc or "").splitlines()[0] if doc else None)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=("cpu", "wall"), default=clock)
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="run under torch.autocast(bf16)")
    return p


def random_batch(
    n: int, device: torch.device, classes: int = 10
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` uniform 32×32 images and labels (generator seed 0), on ``device``."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, 32, 32, generator=gen).to(device)
    y = torch.randint(0, classes, (n,), generator=gen).to(device)
    return x, y


def fitted_classifier(
    encoder: VisionTransformer, n: int = 512, classes: int = 4
) -> tuple[TaskModel, torch.Tensor, torch.Tensor]:
    """A linear probe fitted on generated images (class = colour of the image's tint)."""
    gen = torch.Generator().manual_seed(0)
    dtype = encoder.pos_embed.dtype
    labels = torch.randint(0, classes, (n,), generator=gen)
    tint = torch.rand(classes, 3, 1, 1, generator=gen, dtype=dtype)
    noise = torch.rand(n, 3, 32, 32, generator=gen, dtype=dtype)
    images = (0.9 * noise + 0.1 * tint[labels]).clamp(0, 1)
    with torch.no_grad():
        feats = torch.cat([encoder(images[i : i + 128]).cls for i in range(0, n, 128)])
    head = LinearClassifier(encoder.embed_dim, classes).to(dtype)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        F.cross_entropy(head.linear(feats), labels).backward()
        opt.step()
    return TaskModel(encoder, head).eval(), images, labels


def median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, clock: str = "cpu"
) -> dict[str, float]:
    """Median time of each function, run interleaved so load drifts hit all equally.

    ``clock="cpu"`` measures this process's CPU time (robust to other jobs on a shared machine
    when torch uses one thread); ``"wall"`` measures wall time (use it on a GPU).
    """
    now = time.process_time if clock == "cpu" else time.perf_counter
    for fn in fns.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = now()
            fn()
            times[name].append(now() - start)
    return {k: statistics.median(v) for k, v in times.items()}
