"""Evaluating one encoder on one dataset: the rows, curves and galleries of its cells.

The heads of the tasks that perturb the same tokens are evaluated together in one streaming
pass of :func:`ssl_robust.evaluate`: the EmbedAttack examples are computed once per batch and
scored by every head (attack once, evaluate many); each head gets its own task attack.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ..attacks import Attack, EmbedAttack
from ..data.base import DatasetInfo, SampleDataset
from ..encoders import Encoder
from ..evaluation import EvalResult, evaluate, head_of
from ..runtime import rank_world
from ..tasks import get_task
from .context import RunContext
from .spec import DatasetSpec, EncoderSpecEntry

__all__ = ["evaluate_cells"]

logger = logging.getLogger("ssl_robust.bench")


def _task_attack(ctx: RunContext, info: DatasetInfo, eps: float) -> Callable[[nn.Module], Attack]:
    def make(model: nn.Module) -> Attack:
        task = get_task(str(getattr(head_of(model), "task", "")))
        threshold = ctx.spec.attack.segpgd_threshold
        return task.make_attack(model, info, success_threshold=threshold, **ctx.attack_options(eps))

    return make


def _attacks(
    ctx: RunContext, encoder: Encoder, tokens: str, info: DatasetInfo, eps: float, suffix: str
) -> dict[str, Attack | Callable[[nn.Module], Attack]]:
    embed = EmbedAttack(encoder, tokens=tokens, **ctx.attack_options(eps))  # type: ignore[arg-type]
    return {f"embed_attack{suffix}": embed, f"task_attack{suffix}": _task_attack(ctx, info, eps)}


def _loader(ctx: RunContext, data: Any) -> torch.utils.data.DataLoader[Any]:
    return torch.utils.data.DataLoader(data, batch_size=ctx.spec.eval.batch_size)


def evaluate_cells(
    ctx: RunContext,
    entry: EncoderSpecEntry,
    ds: DatasetSpec,
    encoder: Encoder,
    data: SampleDataset,
    info: DatasetInfo,
    models: Mapping[str, nn.Module],
) -> None:
    """Evaluate ``models`` (task → trained model) of ``encoder`` on ``data`` and store every
    row, curve and gallery in ``ctx.store``."""
    groups: dict[str, list[str]] = {}
    for task in models:
        groups.setdefault(get_task(task).tokens, []).append(task)
    ident = {"dataset": ds.name, "encoder": entry.name, "encoder_type": entry.encoder_type}
    a = ctx.spec.attack
    for tokens, tasks in groups.items():
        group = {t: models[t] for t in tasks}
        res = evaluate(
            group,
            _loader(ctx, data),
            attacks=_attacks(ctx, encoder, tokens, info, a.eps, ""),
            info=info,
            seed=ctx.spec.seed,
            keep=ctx.spec.eval.gallery,
            device=ctx.device,
            progress=ctx.progress,
            desc=f"{entry.name}/{ds.name}/{tokens}",
        )
        ctx.store.results.setdefault("timings", {}).setdefault("embed_attacks", []).append(
            {**ident, "tokens": tokens, "seconds": res.seconds["embed_attack"], "heads": len(tasks)}
        )
        curves = _curves(ctx, encoder, tokens, info, group, data) if a.curve_eps else None
        for task in tasks:
            _store_task(ctx, ident, task, res, curves)


def _curves(
    ctx: RunContext,
    encoder: Encoder,
    tokens: str,
    info: DatasetInfo,
    group: dict[str, nn.Module],
    data: SampleDataset,
) -> EvalResult:
    a = ctx.spec.attack
    prefix = torch.utils.data.Subset(data, range(min(a.curve_subset, len(data))))
    attacks: dict[str, Attack | Callable[[nn.Module], Attack]] = {}
    for eps in a.curve_eps:
        attacks.update(_attacks(ctx, encoder, tokens, info, eps, f"@{eps!r}"))
    return evaluate(
        group,
        _loader(ctx, prefix),
        attacks=attacks,
        info=info,
        seed=ctx.spec.seed,
        device=ctx.device,
        progress=ctx.progress,
        desc="curves",
    )


def _store_task(
    ctx: RunContext,
    ident: dict[str, str],
    task: str,
    res: EvalResult,
    curves: EvalResult | None,
) -> None:
    spec = get_task(task)
    main = res.headline[task]
    row = {
        "task": task,
        **ident,
        "metric": spec.metric_key,
        "clean": main["clean"],
        "embed_attack": main["embed_attack"],
        "task_attack": main["task_attack"],
    }
    logger.info(
        "%s %s %s: clean %.3f, EmbedAttack %.3f, %s %.3f",
        ident["encoder"], ident["dataset"], task, row["clean"], row["embed_attack"],
        spec.attack_label, row["task_attack"],
    )  # fmt: skip
    if curves is not None:
        a = ctx.spec.attack
        for kind in ("embed_attack", "task_attack"):
            values = [curves.headline[task][f"{kind}@{eps!r}"] for eps in a.curve_eps]
            ctx.store.add(
                "curves",
                {
                    "task": task,
                    **ident,
                    "metric": spec.metric_key,
                    "attack": kind,
                    "eps": [0.0, *a.curve_eps, a.eps],
                    "values": [main["clean"], *values, main[kind]],
                },
            )
    kept = res.kept.get(task, {})
    if "images" in kept and rank_world()[0] == 0:
        rel = ctx.store.save_file(
            {
                "images": kept["images"],
                "embed_adv": kept["adv/embed_attack"],
                "task_adv": kept["adv/task_attack"],
                "target": kept["target"],
                "pred_clean": kept["pred/clean"],
                "pred_embed": kept["pred/embed_attack"],
                "pred_task": kept["pred/task_attack"],
            },
            f"galleries/{ident['dataset']}__{task}__{ident['encoder']}.pt",
        )
        ctx.store.add("galleries", {"task": task, **ident, "file": str(rel)})
    ctx.store.add("rows", row)  # last: a row marks the cell as done
