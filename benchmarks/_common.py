"""Shared set-up for the benchmark scripts: a small ViT classifier fitted on generated data."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ssl_robust.adaptors import LinearClassifier, TaskModel
from ssl_robust.encoders import VisionTransformer


def small_vit(dtype: torch.dtype = torch.float32) -> VisionTransformer:
    """ViT-Tiny-like encoder on 32×32 images (patch 4: 64 tokens, D=192, 6 blocks)."""
    torch.manual_seed(0)
    vit = VisionTransformer(img_size=32, patch_size=4, embed_dim=192, depth=6, num_heads=3)
    return vit.to(dtype).eval()


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
