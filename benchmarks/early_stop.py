"""Robust-accuracy evaluation: our PGD with early stop vs classic 20-step PGD.

Classic PGD is torchattacks' PGD when torchattacks is installed (``pip install
ssl-robust[compare]``), else an independent hand-written loop of the same algorithm. On a
non-robust model, prints the speed-up of ``PGD(early_stop=True)`` and both robust accuracies
(ours must never be higher). With ``--check-equal`` it also checks, in float64, that our PGD with
random start off and ``select="last"`` reproduces classic PGD to round-off.

Run:  python benchmarks/early_stop.py [--n 256] [--repeats 3] [--threads 1] [--check-equal]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from _common import fitted_classifier, interleaved, small_vit

from ssl_robust.attacks import PGD
from ssl_robust.metrics import Accuracy

EPS, ALPHA, STEPS = 8 / 255, 2 / 255, 20


def classic_pgd(model, x, y, random_start: bool, gen: torch.Generator | None = None):
    """Classic PGD (Madry et al.) as torchattacks implements it."""
    try:
        import torchattacks
    except ImportError:
        torchattacks = None
    if torchattacks is not None:
        atk = torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=random_start)
        return atk(x, y)
    adv = x.clone()
    if random_start:
        adv = (adv + torch.empty_like(adv).uniform_(-EPS, EPS, generator=gen)).clamp(0, 1)
    for _ in range(STEPS):
        adv.requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(adv), y), adv)
        adv = adv.detach() + ALPHA * g.sign()
        adv = (x + (adv - x).clamp(-EPS, EPS)).clamp(0, 1).detach()
    return adv


def acc(model, x, y) -> float:
    m = Accuracy()
    with torch.no_grad():
        m.update(model(x), y)
    return float(m.compute())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    p.add_argument("--check-equal", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    try:
        import torchattacks  # noqa: F401

        ref_name = "torchattacks.PGD"
    except ImportError:
        ref_name = "hand-written classic PGD"

    model, images, labels = fitted_classifier(small_vit(), n=a.n)
    model.requires_grad_(False)
    print(f"classic = {ref_name}; clean accuracy {acc(model, images, labels):.3f} on {a.n} images")
    ours = PGD(model, early_stop=True, steps=STEPS, generator=torch.Generator().manual_seed(0))
    results: dict[str, torch.Tensor] = {}

    def run_ours() -> None:
        results["ours"] = ours(images, labels)

    def run_classic() -> None:
        torch.manual_seed(0)
        results["classic"] = classic_pgd(model, images, labels, True, torch.Generator())

    t = interleaved({"ours": run_ours, "classic": run_classic}, a.repeats, a.clock)
    print(
        f"classic 20-step PGD: {t['classic']:.2f} s, robust accuracy "
        f"{acc(model, results['classic'], labels):.3f}"
    )
    print(
        f"ours, early_stop:    {t['ours']:.2f} s, robust accuracy "
        f"{acc(model, results['ours'], labels):.3f}"
    )
    print(f"speed-up: {t['classic'] / t['ours']:.2f}x")

    if a.check_equal:
        model64, x64, y64 = fitted_classifier(small_vit(torch.float64), n=32)
        model64.requires_grad_(False)
        x64 = x64.double()
        ref = classic_pgd(model64, x64, y64, random_start=False)
        mine = PGD(model64, steps=STEPS, random_start=False, select="last")(x64, y64)
        print(
            f"float64, no random start, select='last': max |ours - classic| = "
            f"{(mine - ref).abs().max().item():.3g}"
        )


if __name__ == "__main__":
    main()
