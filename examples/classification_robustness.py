"""Clean vs EmbedAttack vs PGD accuracy of a linear probe on a small ViT (CPU, < 1 minute).

The encoder is a small randomly initialized VisionTransformer (swap in a real DINO/DINOv2
encoder for real numbers); the data are generated: a coloured square on a noisy background,
the class is the square's colour. A linear head is fitted on frozen CLS embeddings, then
attacked with the paper's settings (eps 8/255, 20 steps of 2/255, uniform random start).

Run:  python examples/classification_robustness.py  [--quick]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from ssl_robust.adaptors import LinearClassifier, TaskModel
from ssl_robust.attacks import PGD, EmbedAttack
from ssl_robust.encoders import VisionTransformer
from ssl_robust.metrics import Accuracy

COLOURS = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.8, 0.2], [0.2, 0.3, 0.9], [0.9, 0.8, 0.1]])


def make_data(n: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy grey backgrounds with one coloured square each; the label is the colour."""
    labels = torch.randint(0, len(COLOURS), (n,), generator=generator)
    images = 0.5 + 0.15 * torch.randn(n, 3, size, size, generator=generator)
    side = size // 2
    corner = torch.randint(0, size - side + 1, (n, 2), generator=generator)
    rows = torch.arange(size).view(1, size, 1)
    cols = torch.arange(size).view(1, 1, size)
    inside = (
        (rows >= corner[:, :1, None])
        & (rows < corner[:, :1, None] + side)
        & (cols >= corner[:, 1:, None])
        & (cols < corner[:, 1:, None] + side)
    )
    square = COLOURS[labels].view(n, 3, 1, 1).expand(-1, -1, size, size)
    images = torch.where(inside.unsqueeze(1), square, images)
    return images.clamp(0, 1), labels


def accuracy(model: TaskModel, images: torch.Tensor, labels: torch.Tensor) -> float:
    metric = Accuracy()
    with torch.no_grad():
        for i in range(0, len(images), 64):
            metric.update(model(images[i : i + 64]), labels[i : i + 64])
    return float(metric.compute())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and steps (tests)")
    args = parser.parse_args()
    n_train, n_test, steps = (256, 64, 5) if args.quick else (512, 128, 20)
    start = time.perf_counter()

    torch.manual_seed(0)  # the example's own model init; attacks use explicit generators
    encoder = VisionTransformer(img_size=32, patch_size=8, embed_dim=96, depth=4, num_heads=4)
    encoder.eval()
    gen = torch.Generator().manual_seed(0)
    x_train, y_train = make_data(n_train, 32, gen)
    x_test, y_test = make_data(n_test, 32, gen)

    # Fit the linear head on frozen features (computed once, without gradients).
    with torch.no_grad():
        feats = torch.cat([encoder(x_train[i : i + 128]).cls for i in range(0, n_train, 128)])
    head = LinearClassifier(encoder.embed_dim, len(COLOURS))
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        F.cross_entropy(head.linear(feats), y_train).backward()
        opt.step()
    model = TaskModel(encoder, head).eval()

    attacks = {
        "EmbedAttack": EmbedAttack(
            encoder, steps=steps, generator=torch.Generator().manual_seed(1)
        ),
        "PGD": PGD(model, steps=steps, generator=torch.Generator().manual_seed(1)),
    }
    rows = [("clean", accuracy(model, x_test, y_test))]
    for name, attack in attacks.items():
        adv = torch.cat(
            [
                attack(x_test[i : i + 64], y_test[i : i + 64] if name == "PGD" else None)
                for i in range(0, n_test, 64)
            ]
        )
        rows.append((name, accuracy(model, adv, y_test)))

    print(f"{'evaluation':<14}{'accuracy':>10}")
    for name, acc in rows:
        print(f"{name:<14}{acc:>10.3f}")
    print(f"(eps=8/255, {steps} steps of 2/255; {time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
