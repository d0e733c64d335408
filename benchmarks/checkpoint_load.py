"""Loading a ViT-B checkpoint: create_encoder(weights=) vs plain torch.load + load_state_dict.

Saves a randomly initialized ViT-B/16 (DINO v1 layout, 86M parameters) to a temporary file and
times, in one process (best of --repeats):

* ``create_encoder("dino_vitb16", weights=path)`` — read, validate keys/shapes, build on the
  meta device and assign the tensors (no random init, no copy);
* baseline A: ``torch.load`` + ``load_state_dict`` into an already built model;
* baseline B: build the model (random init) + ``torch.load`` + ``load_state_dict`` — what a user
  without ssl_robust does.

Run: ``python benchmarks/checkpoint_load.py``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ssl_robust.encoders import VisionTransformer, create_encoder, encoder_spec


def best_of(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", default="dino_vitb16")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    spec = encoder_spec(args.name)
    built = VisionTransformer(**spec.kwargs)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vitb.pth"
        torch.save(built.state_dict(), path)
        size_mb = path.stat().st_size / 2**20

        def ours() -> object:
            return create_encoder(args.name, weights=path)

        def load_only() -> object:
            return built.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))

        def build_and_load() -> object:
            model = VisionTransformer(**spec.kwargs)
            return model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))

        ours()  # warm the page cache and lazy imports for every contender alike
        t_ours = best_of(ours, args.repeats)
        t_load = best_of(load_only, args.repeats)
        t_build = best_of(build_and_load, args.repeats)
    print(
        f"{args.name}: checkpoint {size_mb:.0f} MiB, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, best of {args.repeats}"
    )
    print(f"create_encoder(weights=)              {t_ours * 1e3:8.1f} ms")
    print(
        f"torch.load + load_state_dict (built)  {t_load * 1e3:8.1f} ms   ratio ours/this = "
        f"{t_ours / t_load:.2f}"
    )
    print(
        f"build + torch.load + load_state_dict  {t_build * 1e3:8.1f} ms   ratio ours/this = "
        f"{t_ours / t_build:.2f}"
    )


if __name__ == "__main__":
    main()
