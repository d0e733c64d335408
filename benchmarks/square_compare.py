"""Our Square vs torchattacks' Square: robust accuracy and queries per image, same model,
eps and query budget.

The model is the one of ``strong_eval.py``: the bundled encoder ``vit_tiny_shapes`` (32×32
images) with a linear probe on its CLS token fitted here on the synthetic ``shapes`` labels.
Both attacks run AutoAttack's settings (p_init 0.8, margin loss, the rescaled p schedule, one
restart) with the same budget, L∞ and L2, over several seeds (the attack is random: the seed
spread says how far apart two runs of the *same* attack are). torchattacks' Square draws its
window position and signs once for the whole batch, ours draws the signs per image (as the
paper's reference code), so equal seeds do not give equal draws.

``queries/img`` counts the images the model saw (forwards, no gradients), per evaluated image:
with early stop on success both spend the whole budget only on the images they cannot break.
White-box reference: robust accuracy under our APGD-CE (100 steps).

Run:  python benchmarks/square_compare.py [--n 128] [--queries 1000] [--seeds 0,1,2]
(results in docs/performance.md; needs torchattacks: ``pip install ssl-robust[compare]``)
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from _common import Counter, shapes, shapes_probe
from torch import Tensor, nn

from ssl_robust.attacks import APGD, Square
from ssl_robust.encoders import create_encoder


def probe() -> tuple[nn.Module, int]:
    encoder = create_encoder("vit_tiny_shapes", pretrained=True).eval().requires_grad_(False)
    return shapes_probe(encoder)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--linf", type=float, default=2.0, help="L∞ eps, in 1/255")
    p.add_argument("--l2", type=float, default=0.25, help="L2 eps")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    import torchattacks

    print(f"torch {torch.__version__}, torchattacks {torchattacks.__version__}, "
          f"{a.threads} thread(s), n={a.n}, queries={a.queries}")  # fmt: skip
    net, _ = probe()
    model = Counter(net)
    val = shapes(a.n, "val")
    x, y = val["image"], val["label"]
    seeds = [int(s) for s in a.seeds.split(",")]

    def accuracy(images: Tensor) -> float:
        with torch.no_grad():
            return float((net(images).argmax(1) == y).float().mean())

    print(f"clean accuracy {accuracy(x):.3f}")
    print("| attack | norm | eps | robust acc (per seed) | mean | queries/img | CPU s |")
    print("|---|---|---|---|---|---|---|")
    for norm, eps in (("linf", a.linf / 255), ("l2", a.l2)):
        ta_norm = "Linf" if norm == "linf" else "L2"
        apgd = APGD(net, eps=eps, norm=norm, generator=torch.Generator().manual_seed(0))  # type: ignore[arg-type]
        print(f"| ours APGD-CE (100) | {norm} | {eps:.4g} | {accuracy(apgd(x, y)):.3f} | | | |")

        def ours(s: int, eps: float = eps, norm: str = norm) -> Tensor:
            gen = torch.Generator().manual_seed(s)
            return Square(model, eps=eps, norm=norm, queries=a.queries, generator=gen)(x, y)  # type: ignore[arg-type]

        def theirs(s: int, eps: float = eps, ta_norm: str = ta_norm) -> Tensor:
            return torchattacks.Square(  # type: ignore[no-any-return]
                model, norm=ta_norm, eps=eps, n_queries=a.queries, n_restarts=1, p_init=0.8,
                loss="margin", resc_schedule=True, seed=s,
            )(x, y)  # fmt: skip

        runs: list[tuple[str, Callable[[int], Tensor]]] = [
            ("ours Square", ours),
            ("torchattacks Square", theirs),
        ]
        for name, run in runs:
            accs, seen, cpu = [], [], 0.0
            for s in seeds:
                model.reset()
                start = time.process_time()
                adv = run(s)
                cpu += time.process_time() - start
                seen.append(model.seen / a.n)
                diff = (adv - x).flatten(1)
                size = diff.abs().max(1).values if norm == "linf" else diff.norm(dim=1)
                assert float(size.max()) <= eps * (1 + 1e-5) and adv.min() >= 0 and adv.max() <= 1
                accs.append(accuracy(adv))
            print(f"| {name} | {norm} | {eps:.4g} | {', '.join(f'{v:.3f}' for v in accs)} | "
                  f"{statistics.mean(accs):.3f} | {statistics.mean(seen):.0f} | "
                  f"{cpu / len(seeds):.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
