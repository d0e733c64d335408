"""DeACL fine-tune the embedded default encoder: ``ssl_robust/assets/vit_tiny_shapes_deacl.pt``.

The embedded benchmark (``ssl-robust bench`` without ``--config``) evaluates the bundled
``vit_tiny_shapes`` encoder and its DeACL fine-tuned version. Fine-tuning takes minutes on a
CPU, so the fine-tuned weights ship in the package and the default spec loads them
(``DeACLSpec(checkpoint=...)``); a spec without a checkpoint still fine-tunes in the runner.

This script makes those weights with exactly the fine-tuning the runner would do for the default
spec: DeACL (paper §3.3, DeACLConfig defaults: eps 4/255, 5 attack steps, gamma 2, SGD momentum
0.9) for 6 epochs (1 warm-up) at lr 0.05, batch 128, on 1024 ``shapes`` training scenes (32 px,
``contrast=0.35``, the benchmark's data), seed 0, from ``create_encoder("vit_tiny_shapes",
pretrained=True)``. One CPU thread (``OMP_NUM_THREADS=1``) reproduces the shipped file's
training; other thread counts give slightly different floating-point results.

Run:  OMP_NUM_THREADS=1 python scripts/deacl_default_encoder.py [--out PATH]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ssl_robust.bench.data import open_images
from ssl_robust.defenses import DeACLConfig, DeACLTrainer
from ssl_robust.encoders import create_encoder

ROOT = Path(__file__).resolve().parents[1]
#: The default spec's DeACL settings (ssl_robust.bench.spec.default_spec).
SETTINGS = {"train_size": 1024, "batch_size": 128, "epochs": 6, "warmup_epochs": 1, "lr": 0.05}
DATA = {"size": 4000, "contrast": 0.35}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--out", default=str(ROOT / "ssl_robust" / "assets" / "vit_tiny_shapes_deacl.pt")
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    student = create_encoder("vit_tiny_shapes", pretrained=True)
    train = open_images("shapes", None, "train", image_size=32, options=DATA,
                        subset=SETTINGS["train_size"], seed=args.seed)  # fmt: skip
    loader = torch.utils.data.DataLoader(
        train,
        batch_size=SETTINGS["batch_size"],
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(args.seed),
    )
    config = DeACLConfig(
        epochs=SETTINGS["epochs"], warmup_epochs=SETTINGS["warmup_epochs"], lr=SETTINGS["lr"]
    )
    trainer = DeACLTrainer(student, config=config)
    start = time.perf_counter()
    for rec in trainer.fit(loader, progress=False):
        print(f"epoch {rec['epoch']:.0f}: loss {rec['loss']:.4f}, clean_cos "
              f"{rec['clean_cos']:.3f}, adv_cos {rec['adv_cos']:.3f}")  # fmt: skip
    path = trainer.export_student(args.out)
    print(f"wrote {path} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
