"""Depth robustness on synthetic scenes: clean vs EmbedAttack(patch) vs DepthPGD.

Takes hazy scenes from the built-in ``shapes`` dataset (metric depth from the scene geometry,
up to 10 m; 2 % of the depth pixels dropped as missing measurements), trains a
``LinearDepther`` with ``fit()`` on the un-normed last-block tokens of the frozen built-in
encoder ``vit_tiny_shapes`` (as in the paper, via ``feature_view(..., output_norm=False)``),
then attacks it and prints RMSE / AbsRel / δ1. Runs on CPU in about a minute.

    python examples/depth_robustness.py
"""

from __future__ import annotations

import torch

from ssl_robust.adaptors import LinearDepther, TaskModel, feature_view, fit
from ssl_robust.attacks import DepthPGD, EmbedAttack
from ssl_robust.data import create_dataset
from ssl_robust.encoders import create_encoder
from ssl_robust.metrics import DepthMetrics

MAX_DEPTH = 10.0


def make_scenes(n: int, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (n, 3, 32, 32) in [0, 1] and depth (n, 32, 32) in metres (0 = missing)."""
    data = create_dataset("shapes", split=split, size=n, image_size=32, contrast=0.35)
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=n)))
    depth = batch["depth"].clone()
    g = torch.Generator().manual_seed(n)
    depth[torch.rand(depth.shape, generator=g) < 0.02] = 0.0  # missing measurements
    return batch["image"], depth


def evaluate(model: TaskModel, images: torch.Tensor, depth: torch.Tensor) -> dict[str, float]:
    metric = DepthMetrics(max_depth=MAX_DEPTH)
    with torch.no_grad():
        metric.update(model(images), depth)
    return {k: float(v) for k, v in metric.compute().items()}


def main() -> None:
    vit = create_encoder("vit_tiny_shapes", pretrained=True)
    encoder = feature_view(vit, output_norm=False)  # last block, without the final norm
    torch.manual_seed(0)  # the head's initialization
    model = TaskModel(encoder, LinearDepther(vit.embed_dim, max_depth=MAX_DEPTH, bins=64))
    train = make_scenes(512, "train")
    batches = [(train[0][i : i + 64], train[1][i : i + 64]) for i in range(0, 512, 64)]
    # The paper's depth preset (AdamW, wd 0.01, depth_loss), fewer epochs / larger lr here.
    fit(model, batches, preset="depth", epochs=15, lr=3e-3, progress=False)

    images, depth = make_scenes(64, "val")
    gen = torch.Generator().manual_seed(0)
    noise = (images + (torch.rand(images.shape, generator=gen) * 2 - 1) * 8 / 255).clamp(0, 1)
    embed = EmbedAttack(model.encoder, tokens="patch", generator=gen)(images)
    depthpgd = DepthPGD(model, max_depth=MAX_DEPTH, generator=gen)(images, depth)

    print(f"{'input':<28} {'RMSE':>6} {'AbsRel':>7} {'delta1':>7}")
    for name, x in (
        ("clean", images),
        ("uniform noise (eps 8/255)", noise),
        ("EmbedAttack(tokens='patch')", embed),
        ("DepthPGD", depthpgd),
    ):
        m = evaluate(model, x, depth)
        print(f"{name:<28} {m['rmse']:6.3f} {m['abs_rel']:7.3f} {m['delta1']:7.3f}")


if __name__ == "__main__":
    main()
