"""Worker for the two-process (gloo) metric tests: ``torchrun ... _helpers_metrics.py OUT``."""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor

from ssl_robust.metrics import Accuracy, DepthMetrics, MeanIoU


def shard_data(rank: int, world: int) -> dict[str, Tensor]:
    """The full data set split by rank (rank < 0: all of it). Sizes differ per rank."""
    g = torch.Generator().manual_seed(0)
    data = {
        "logits": torch.randn(10, 4, generator=g),
        "labels": torch.randint(0, 4, (10,), generator=g),
        "seg_pred": torch.randint(0, 3, (10, 4, 4), generator=g),
        "seg_target": torch.randint(0, 3, (10, 4, 4), generator=g),
        "depth_pred": torch.rand(10, 4, 4, generator=g) * 5 + 0.1,
        "depth_target": torch.rand(10, 4, 4, generator=g) * 5,
    }
    if rank < 0:
        return data
    cut = [0, 3, 10] if world == 2 else [0, 10]  # uneven shards
    return {k: v[cut[rank] : cut[rank + 1]] for k, v in data.items()}


def metrics(sync_on_compute: bool = True) -> dict[str, object]:
    return {
        "acc": Accuracy(sync_on_compute=sync_on_compute),
        "miou": MeanIoU(3, sync_on_compute=sync_on_compute),
        "depth": DepthMetrics(sync_on_compute=sync_on_compute),
    }


def feed(ms: dict[str, object], d: dict[str, Tensor]) -> None:
    ms["acc"].update(d["logits"], d["labels"])  # type: ignore[attr-defined]
    ms["miou"].update(d["seg_pred"], d["seg_target"])  # type: ignore[attr-defined]
    ms["depth"].update(d["depth_pred"], d["depth_target"])  # type: ignore[attr-defined]


def values(ms: dict[str, object]) -> dict[str, float]:
    out = {}
    for name, m in ms.items():
        v = m.compute()  # type: ignore[attr-defined]
        if isinstance(v, dict):
            out.update({f"{name}.{k}": float(x) for k, x in v.items()})
        else:
            out[name] = float(v)
    return out


def main(out: Path) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=timedelta(seconds=30))
    rank, world = dist.get_rank(), dist.get_world_size()
    d = shard_data(rank, world)
    result: dict[str, object] = {}

    local = metrics(sync_on_compute=False)
    feed(local, d)
    if rank == 0:  # rank 1 never calls compute(): no collective may be involved
        result["local_rank0_only"] = values(local)

    synced_first = metrics()
    feed(synced_first, d)
    for m in synced_first.values():
        m.sync()  # type: ignore[attr-defined]  # every rank
    if rank == 0:  # then rank 0 alone computes from the snapshot
        result["sync_then_rank0_only"] = values(synced_first)

    everywhere = metrics()
    feed(everywhere, d)
    result["compute_on_all_ranks"] = values(everywhere)
    result["local_state_after_sync"] = int(everywhere["acc"].total)  # type: ignore[attr-defined]

    (out / f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
