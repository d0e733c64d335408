"""Reliable evaluation: the paper's attacks vs APGD, SEA's losses and strong_attack, per task.

One process, side by side, on the bundled encoder ``vit_tiny_shapes`` (32×32 images) with
linear heads fitted here on the synthetic ``shapes`` data:

- classification: robust accuracy and per-sample passes of our PGD-20, APGD-CE and
  ``strong_attack``, and of torchattacks' APGD (CE), APGDT and AutoAttack (standard) when
  torchattacks is installed (``pip install ssl-robust[compare]``);
- segmentation: mIoU and pixel accuracy under SegPGD, SegPGD with each SEA loss (APGD
  schedule) and ``strong_attack``;
- depth: RMSE under DepthPGD (both schedules) and ``strong_attack``;
- embedding: mean distance reached at equal steps by EmbedAttack with each schedule.

"passes" count images: ``grad`` = forwards whose input requires grad (each followed by one
backward), ``fwd`` = forwards without. Averaged per evaluated image.

Run:  python benchmarks/strong_eval.py [--n 128] [--eps 2] [--threads 1] [--tasks ...]
(results in docs/performance.md; about 10 minutes on one CPU thread, AutoAttack most of it)
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from _common import Counter, shapes, shapes_probe
from torch import Tensor, nn

from ssl_robust.adaptors import LinearDepther, LinearSegmenter, TaskModel, fit
from ssl_robust.attacks import APGD, PGD, DepthPGD, EmbedAttack, SegPGD, strong_attack
from ssl_robust.encoders import create_encoder
from ssl_robust.losses import SEGMENTATION_LOSSES
from ssl_robust.metrics import DepthMetrics, MeanIoU

IGNORE = 255


def measure(counter: Counter, n: int, run: Callable[[], Tensor]) -> tuple[Tensor, str, float]:
    counter.reset()
    start = time.process_time()
    adv = run()
    seconds = time.process_time() - start
    return adv, f"{counter.grad / n:7.1f} {counter.fwd / n:7.1f}", seconds


def classification(encoder: nn.Module, n: int, eps: float, seed: int) -> None:
    """A linear probe on the frozen encoder's CLS token, fitted on the shapes labels (not
    adversarially): at eps = 2/255 PGD-20 leaves about half of the images robust."""
    val = shapes(n, "val")
    probe, classes = shapes_probe(encoder)
    model = Counter(probe)
    x, y = val["image"], val["label"]

    def accuracy(images: Tensor) -> float:
        with torch.no_grad():
            return float((model.model(images).argmax(1) == y).float().mean())

    def gen() -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    es = {"early_stop": True}  # same result under select="best"; skips broken samples
    rows: list[tuple[str, Callable[[], Tensor]]] = [
        ("clean", lambda: x),
        (
            "ours PGD-20 (step eps/4)",
            lambda: PGD(model, eps=eps, step_size=eps / 4, generator=gen())(x, y),
        ),
        (
            "ours PGD-20 (step eps/4), early_stop",
            lambda: PGD(model, eps=eps, step_size=eps / 4, generator=gen(), **es)(x, y),
        ),
        ("ours APGD-CE (100)", lambda: APGD(model, eps=eps, generator=gen())(x, y)),
        (
            "ours APGD-CE (100), early_stop",
            lambda: APGD(model, eps=eps, generator=gen(), **es)(x, y),
        ),
        (
            "ours APGD-T (100, 3 targets), early_stop",
            lambda: APGD(model, eps=eps, loss="dlr", targeted=True, generator=gen(), **es)(x, y),
        ),
        (
            "ours strong_attack (100)",
            lambda: strong_attack(model, task="classification", eps=eps, generator=gen())(x, y),
        ),
    ]
    try:
        import torchattacks

        rows += [
            (
                "torchattacks APGD-CE (100)",
                lambda: torchattacks.APGD(model, eps=eps, steps=100, loss="ce", seed=seed)(x, y),
            ),
            (
                "torchattacks APGDT (100)",
                lambda: torchattacks.APGDT(model, eps=eps, steps=100, n_classes=classes, seed=seed)(
                    x, y
                ),
            ),
            (
                "torchattacks AutoAttack (standard)",
                lambda: torchattacks.AutoAttack(
                    model, eps=eps, version="standard", n_classes=classes, seed=seed
                )(x, y),
            ),
        ]
    except ImportError:
        print("(torchattacks not installed: its rows are skipped)")
    print(f"\n## classification: {n} val images, {classes} classes, eps {eps * 255:g}/255 (Linf)\n")
    print("| attack | robust acc. | grad passes/img | fwd passes/img | CPU s |")
    print("|---|---|---|---|---|")
    for name, run in rows:
        adv, passes, seconds = measure(model, n, run)
        assert (adv - x).abs().max() <= eps + 1e-6
        g, f = passes.split()
        print(f"| {name} | {accuracy(adv):.4f} | {g} | {f} | {seconds:.1f} |")


def segmentation(encoder: nn.Module, n: int, eps: float, steps: int, seed: int) -> None:
    train, val = shapes(256, "train"), shapes(n, "val")
    torch.manual_seed(0)
    model = TaskModel(encoder, LinearSegmenter(encoder.embed_dim, num_classes=5))
    batches = [(train["image"][i : i + 16], train["mask"][i : i + 16]) for i in range(0, 256, 16)]
    fit(
        model,
        batches,
        preset="segmentation",
        epochs=3,
        lr=1e-3,
        progress=False,
        generator=torch.Generator().manual_seed(0),
    )
    model.eval()
    x, masks = val["image"], val["mask"]

    def scores(images: Tensor) -> tuple[float, float]:
        miou = MeanIoU(num_classes=5, ignore_index=IGNORE)
        with torch.no_grad():
            logits = model(images)
        miou.update(logits, masks)
        return miou.compute(), float((logits.argmax(1) == masks).float().mean())

    def gen() -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    rows: list[tuple[str, Callable[[], Tensor]]] = [("clean", lambda: x)]
    rows.append(
        (
            f"SegPGD ({steps}, fixed)",
            lambda: SegPGD(model, eps=eps, step_size=eps / 4, steps=steps, generator=gen())(
                x, masks
            ),
        )
    )
    for name in SEGMENTATION_LOSSES:
        rows.append(
            (
                f"SegPGD(loss={name!r}) ({steps}, apgd)",
                lambda name=name: SegPGD(
                    model, loss=name, eps=eps, steps=steps, schedule="apgd", generator=gen()
                )(x, masks),
            )
        )
    rows.append(
        (
            f"strong_attack ({steps} per loss)",
            lambda: strong_attack(
                model, task="segmentation", eps=eps, steps=steps, generator=gen()
            )(x, masks),
        )
    )
    print(f"\n## segmentation: {n} val scenes, 5 classes, eps {eps * 255:g}/255 (Linf)\n")
    print("| attack | mIoU | pixel acc. |\n|---|---|---|")
    for name, run in rows:
        miou, acc = scores(run())
        print(f"| {name} | {miou:.4f} | {acc:.4f} |")


def depth(encoder: nn.Module, n: int, eps: float, steps: int, seed: int) -> None:
    train, val = shapes(256, "train"), shapes(n, "val")
    torch.manual_seed(0)
    model = TaskModel(encoder, LinearDepther(encoder.embed_dim, max_depth=10.0, bins=64))
    batches = [(train["image"][i : i + 64], train["depth"][i : i + 64]) for i in range(0, 256, 64)]
    fit(model, batches, preset="depth", epochs=6, lr=3e-3, progress=False)
    model.eval()
    x, d = val["image"], val["depth"]

    def rmse(images: Tensor) -> float:
        metric = DepthMetrics(max_depth=10.0)
        with torch.no_grad():
            metric.update(model(images), d)
        return metric.compute()["rmse"]

    def gen() -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    rows: list[tuple[str, Callable[[], Tensor]]] = [
        ("clean", lambda: x),
        (
            f"DepthPGD ({steps}, fixed)",
            lambda: DepthPGD(model, eps=eps, step_size=eps / 4, steps=steps, generator=gen())(x, d),
        ),
        (
            f"DepthPGD ({steps}, apgd)",
            lambda: DepthPGD(model, eps=eps, steps=steps, schedule="apgd", generator=gen())(x, d),
        ),
        (
            f"DepthPGD(loss='l1_log') ({steps}, apgd)",
            lambda: DepthPGD(
                model, loss="l1_log", eps=eps, steps=steps, schedule="apgd", generator=gen()
            )(x, d),
        ),
        (
            f"strong_attack ({steps} per loss)",
            lambda: strong_attack(model, task="depth", eps=eps, steps=steps, generator=gen())(x, d),
        ),
    ]
    print(f"\n## depth: {n} val scenes, eps {eps * 255:g}/255 (Linf)\n")
    print("| attack | RMSE (m) |\n|---|---|")
    for name, run in rows:
        print(f"| {name} | {rmse(run()):.4f} |")


def embedding(encoder: nn.Module, n: int, eps: float, steps: int, seed: int) -> None:
    x = shapes(n, "val")["image"]
    print(f"\n## embedding: {n} val images, CLS, squared L2, eps {eps * 255:g}/255 (Linf)\n")
    print("| steps | fixed (step eps/4) | apgd |\n|---|---|---|")
    for k in (steps // 2, steps, 2 * steps):
        out = []
        for schedule in ("fixed", "apgd"):
            atk = EmbedAttack(
                encoder,
                eps=eps,
                step_size=eps / 4,
                steps=k,
                schedule=schedule,
                generator=torch.Generator().manual_seed(seed),
            )
            out.append(float(atk.run(x).loss.mean()))
        print(f"| {k} | {out[0]:.3f} | {out[1]:.3f} |")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=128, help="classification images")
    p.add_argument("--n-dense", type=int, default=32, help="segmentation/depth/embedding images")
    p.add_argument("--eps", type=float, default=2.0, help="classification eps, in 1/255")
    p.add_argument("--dense-eps", type=float, default=2.0, help="dense/embedding eps, in 1/255")
    p.add_argument("--steps", type=int, default=20, help="steps per dense/embedding attack")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tasks", default="classification,segmentation,depth,embedding")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {a.threads} thread(s)")
    encoder = create_encoder("vit_tiny_shapes", pretrained=True).eval().requires_grad_(False)
    tasks = a.tasks.split(",")
    if "classification" in tasks:
        classification(encoder, a.n, a.eps / 255, a.seed)
    if "segmentation" in tasks:
        segmentation(encoder, a.n_dense, a.dense_eps / 255, a.steps, a.seed)
    if "depth" in tasks:
        depth(encoder, a.n_dense, a.dense_eps / 255, a.steps, a.seed)
    if "embedding" in tasks:
        embedding(encoder, a.n_dense, a.dense_eps / 255, a.steps, a.seed)


if __name__ == "__main__":
    main()
