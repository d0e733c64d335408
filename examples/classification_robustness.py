"""Classification robustness on synthetic scenes: clean vs EmbedAttack vs PGD accuracy.

Takes hazy scenes from the built-in ``shapes`` dataset (the label is the kind of the main
shape: circle, square, triangle, cross), trains a ``LinearClassifier`` with ``fit()`` on the
CLS token of the frozen built-in encoder ``vit_tiny_shapes`` (self-supervised on ``shapes``,
weights shipped in the package), straight from a ``DataLoader`` of dict batches, then
evaluates it with the streaming loop ``ssl_robust.evaluate``: clean, under the task-agnostic
EmbedAttack on the CLS token, and under PGD on the labels, with the paper's settings
(eps 8/255, steps of 2/255, uniform random start). Runs on CPU in well under a minute.

    python examples/classification_robustness.py  [--quick]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader

from ssl_robust import evaluate
from ssl_robust.adaptors import LinearClassifier, TaskModel, fit
from ssl_robust.attacks import PGD, EmbedAttack
from ssl_robust.data import create_dataset
from ssl_robust.encoders import create_encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and steps (tests)")
    args = parser.parse_args()
    n_train, n_test, steps = (512, 64, 5) if args.quick else (2000, 128, 20)
    start = time.perf_counter()

    shapes = {"image_size": 32, "contrast": 0.35}
    train = create_dataset("shapes", split="train", size=n_train, **shapes)
    test = create_dataset("shapes", split="val", size=n_test, **shapes)

    encoder = create_encoder("vit_tiny_shapes", pretrained=True)
    torch.manual_seed(0)  # the head's initialization
    model = TaskModel(encoder, LinearClassifier(encoder.embed_dim, train.info.num_classes))
    # The paper's classification preset (Adam, horizontal flips) with a learning rate for this
    # tiny encoder; the batches are the dataset's dicts, the "label" key is the target.
    fit(
        model,
        DataLoader(train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0)),
        epochs=5,
        lr=0.01,
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )

    result = evaluate(
        model,
        DataLoader(test, batch_size=64),
        attacks={
            # task-agnostic: pushes the CLS embedding away, needs no label (and no head)
            "EmbedAttack": EmbedAttack(encoder, tokens="cls", steps=steps),
            # one attack per model, given that model's labels
            "PGD": lambda m: PGD(m, steps=steps),
        },
        seed=1,  # the random starts, drawn per sample
    )

    print(f"{'evaluation':<14}{'accuracy':>10}")
    for name, acc in result.headline["model"].items():
        print(f"{name:<14}{acc:>10.3f}")
    print(
        f"({result.samples} test images; eps=8/255, {steps} steps of 2/255; "
        f"{time.perf_counter() - start:.1f} s)"
    )


if __name__ == "__main__":
    main()
