"""Head training for the benchmark: one linear head per encoder × dataset × task, cached."""

from __future__ import annotations

import torch
from torch import nn

from ..adaptors import SlidingWindow, TaskModel, fit
from ..data.base import DatasetInfo
from ..encoders import Encoder
from ..runtime import barrier, broadcast_module
from ..tasks import get_task
from .context import RunContext
from .spec import DatasetSpec, HeadSpec

__all__ = ["trained_model"]


def trained_model(
    ctx: RunContext, encoder_name: str, encoder: Encoder, ds: DatasetSpec, task: str,
    info: DatasetInfo,
) -> nn.Module:  # fmt: skip
    """The encoder with its trained head for ``task`` on ``ds`` (loaded from ``heads/`` if
    there). Every rank trains the same head from the same seed on the same data, then takes
    rank 0's weights, so all ranks evaluate exactly one model; rank 0 writes the cache.

    The head reads the tokens of :attr:`~ssl_robust.tasks.TaskSpec.encoder_view`. Heads whose
    preset trains on random crops (segmentation) are trained on crops of ``ds.window`` pixels
    and evaluated by a sliding window of that size (stride half of it) when ``ds.window`` is
    set, whatever the encoder family; otherwise trained and evaluated on whole images."""
    spec = get_task(task)
    hs = ctx.spec.heads.get(task, HeadSpec())
    with torch.random.fork_rng(devices=[]):  # seeded init, the caller's RNG untouched
        torch.manual_seed(ctx.spec.seed)
        head: nn.Module = spec.make_head(encoder.embed_dim, info, **hs.options)
    model = TaskModel(spec.encoder_view(encoder), head).to(ctx.device)  # type: ignore[arg-type]
    crops = spec.fit_preset.crop and ds.window is not None  # trained on crops: sliding window
    evaluated: nn.Module = model
    if crops and ds.window is not None:
        evaluated = SlidingWindow(model, window=ds.window, stride=ds.window // 2)
    rel = f"heads/{encoder_name}__{ds.name}__{task}.pt"
    path = ctx.store.out / rel
    barrier()  # every rank sees the same cache
    if path.exists():
        head.load_state_dict(torch.load(path, map_location=ctx.device, weights_only=True))
        return evaluated.eval()
    train = ctx.training_data(ds, ds.train_split, subset=hs.train_size, seed=ctx.spec.seed)
    loader = torch.utils.data.DataLoader(
        train,
        batch_size=hs.batch_size or spec.fit_preset.batch_size,
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
        crop_size=ds.window if crops else ds.image_size,
        progress=ctx.progress,
    )
    broadcast_module(head)
    ctx.store.save_file(head.state_dict(), rel)
    return evaluated.eval()
