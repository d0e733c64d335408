"""Head training for the benchmark: one linear head per encoder × dataset × task, cached."""

from __future__ import annotations

import torch
from torch import nn

from ..adaptors import PRESETS, TaskModel, fit
from ..data.base import DatasetInfo
from ..encoders import Encoder
from ..runtime import barrier, broadcast_module
from ..tasks import get_task
from .context import RunContext
from .data import open_dataset
from .spec import DatasetSpec, HeadSpec

__all__ = ["trained_model"]


def trained_model(
    ctx: RunContext, encoder_name: str, encoder: Encoder, ds: DatasetSpec, task: str,
    info: DatasetInfo,
) -> TaskModel:  # fmt: skip
    """The encoder with its trained head for ``task`` on ``ds`` (loaded from ``heads/`` if
    there). Every rank trains the same head from the same seed on the same data, then takes
    rank 0's weights, so all ranks evaluate exactly one model; rank 0 writes the cache."""
    spec = get_task(task)
    with torch.random.fork_rng(devices=[]):  # seeded init, the caller's RNG untouched
        torch.manual_seed(ctx.spec.seed)
        head: nn.Module = spec.make_head(encoder.embed_dim, info)
    model = TaskModel(encoder, head).to(ctx.device)  # type: ignore[arg-type]
    rel = f"heads/{encoder_name}__{ds.name}__{task}.pt"
    path = ctx.store.out / rel
    barrier()  # every rank sees the same cache
    if path.exists():
        head.load_state_dict(torch.load(path, map_location=ctx.device, weights_only=True))
        return model.eval()
    hs = ctx.spec.heads.get(task, HeadSpec())
    train = open_dataset(ds, ds.train_split, subset=hs.train_size, seed=ctx.spec.seed)
    loader = torch.utils.data.DataLoader(
        train,
        batch_size=hs.batch_size or PRESETS[task].batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(ctx.spec.seed),
    )
    fit(
        model,
        loader,
        preset=spec.name,
        epochs=hs.epochs,
        lr=hs.lr,
        weight_decay=hs.weight_decay,
        ignore_index=info.ignore_index,
        generator=torch.Generator().manual_seed(ctx.spec.seed),
        progress=ctx.progress,
    )
    broadcast_module(head)
    ctx.store.save_file(head.state_dict(), rel)
    return model.eval()
