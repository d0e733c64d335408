"""Evaluating one encoder on one dataset: the rows, curves and galleries of its cells.

The heads of the tasks that perturb the same tokens are evaluated together in one streaming
pass of :func:`ssl_robust.evaluate`: the EmbedAttack examples are computed once per batch and
scored by every head (attack once, evaluate many); each head gets its own task attack.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attacks import Attack, EmbedAttack, Ensemble
from ..data.base import DatasetInfo, SampleDataset
from ..encoders import Encoder, EncoderOutput
from ..evaluation import AttackLike, EvalResult, evaluate, head_of
from ..reliability import check_evaluation
from ..runtime import rank_world
from ..tasks import get_task
from .context import RunContext
from .spec import DatasetSpec, EncoderSpecEntry
from .suites import SuiteSpec, get_suite

__all__ = ["evaluate_cells"]

logger = logging.getLogger("ssl_robust.bench")


class _WindowedEncoder(nn.Module):
    """The encoder's tokens over the sliding windows of each image, concatenated per image:
    what EmbedAttack perturbs when the heads see whole images through a sliding window
    (cls: (B, n_windows * D), patches: (B, n_windows * N, D))."""

    def __init__(self, encoder: Encoder, window: int, stride: int) -> None:
        super().__init__()
        self.encoder, self.window, self.stride = encoder, window, stride

    def _starts(self, length: int) -> list[int]:
        last = max(length - self.window, 0)
        starts = list(range(0, last + 1, self.stride))
        return starts if starts[-1] == last else [*starts, last]

    def forward(self, images: Tensor) -> EncoderOutput:
        b, _, h, w = images.shape
        x = F.pad(images, (0, max(self.window - w, 0), 0, max(self.window - h, 0)))
        crops = [
            x[:, :, y : y + self.window, c : c + self.window]
            for y in self._starts(x.shape[-2])
            for c in self._starts(x.shape[-1])
        ]
        out = self.encoder(torch.cat(crops))  # window-major: (n * B, ...)
        n = len(crops)
        cls = out.cls.reshape(n, b, -1).transpose(0, 1).reshape(b, -1)
        patches = out.patches.reshape(n, b, *out.patches.shape[1:]).transpose(0, 1)
        patches = patches.reshape(b, -1, patches.shape[-1])
        return EncoderOutput(cls, patches, (1, int(patches.shape[1])))


def _task_attack(ctx: RunContext, info: DatasetInfo, eps: float) -> Callable[[nn.Module], Attack]:
    def make(model: nn.Module) -> Attack:
        task = get_task(str(getattr(head_of(model), "task", "")))
        threshold = ctx.spec.attack.segpgd_threshold
        return task.make_attack(model, info, success_threshold=threshold, **ctx.attack_options(eps))

    return make


def _suite_attack(
    ctx: RunContext, suite: SuiteSpec, info: DatasetInfo, eps: float
) -> Callable[[nn.Module], Attack | Ensemble]:
    def make(model: nn.Module) -> Attack | Ensemble:
        task = get_task(str(getattr(head_of(model), "task", "")))
        attack: Attack | Ensemble = suite.make_attack(
            model, task, info, eps=eps, settings=ctx.spec.attack
        )
        return attack

    return make


def _attacks(
    ctx: RunContext,
    encoder: nn.Module,
    tokens: str,
    info: DatasetInfo,
    eps: float,
    suffix: str,
    *,
    suite: tuple[str, ...] = ("paper",),
) -> dict[str, AttackLike]:
    embed = EmbedAttack(encoder, tokens=tokens, **ctx.attack_options(eps))  # type: ignore[arg-type]
    attacks: dict[str, AttackLike] = {
        f"embed_attack{suffix}": embed,
        f"task_attack{suffix}": _task_attack(ctx, info, eps),
    }
    for name in suite:
        if name != "paper":
            spec = get_suite(name)
            attacks[f"{spec.column}{suffix}"] = _suite_attack(ctx, spec, info, eps)
    return attacks


def _loader(ctx: RunContext, data: Any, ds: DatasetSpec) -> torch.utils.data.DataLoader[Any]:
    size = 1 if ds.full_images else ctx.spec.eval.batch_size  # whole images differ in size
    return torch.utils.data.DataLoader(data, batch_size=size)


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
    target: nn.Module = encoder  # what EmbedAttack perturbs
    if ds.full_images and ds.window is not None:
        target = _WindowedEncoder(encoder, ds.window, ds.window // 2)
    a = ctx.spec.attack
    for tokens, tasks in groups.items():
        group = {t: models[t] for t in tasks}
        res = evaluate(
            group,
            _loader(ctx, data, ds),
            attacks=_attacks(ctx, target, tokens, info, a.eps, "", suite=a.suite),
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
        curves = _curves(ctx, target, tokens, info, group, data, ds) if a.curve_eps else None
        if a.check and rank_world()[0] == 0:
            _check_cells(ctx, ident, target, tokens, info, group, data, ds)
        for task in tasks:
            _store_task(ctx, ident, task, res, curves)


def _check_cells(
    ctx: RunContext,
    ident: dict[str, str],
    encoder: nn.Module,
    tokens: str,
    info: DatasetInfo,
    group: dict[str, nn.Module],
    data: SampleDataset,
    ds: DatasetSpec,
) -> None:
    """The attack-failure checks of the cells of one token group (rank 0): the task attack of
    every cell, and the EmbedAttack the cells share (checked once, recorded for each)."""
    a = ctx.spec.attack
    timings = ctx.store.results.setdefault("timings", {})
    if ds.full_images:  # whole images of different sizes: the checks need one batch
        for task in group:
            for kind in ("embed_attack", "task_attack"):
                ctx.store.add("checks", {"task": task, **ident, "attack": kind,
                                         "status": "skip", "failed": [], "warned": [],
                                         "report": None})  # fmt: skip
        return
    prefix = torch.utils.data.Subset(data, range(min(a.check_subset, len(data))))
    n, queries, seed = a.check_subset, a.check_queries, ctx.spec.seed
    clock = time.perf_counter()
    embed = EmbedAttack(encoder, tokens=tokens, **ctx.attack_options(a.eps))  # type: ignore[arg-type]
    images = torch.cat([b["image"] for b in _loader(ctx, prefix, ds)]).to(ctx.device)
    reports = {
        "embed_attack": check_evaluation(
            encoder, images, task="embedding", attack=embed, subset=n, square_queries=queries,
            seed=seed,
        )
    }  # fmt: skip
    for task, model in group.items():
        attack = _task_attack(ctx, info, a.eps)(model)
        reports["task_attack"] = check_evaluation(
            model, _loader(ctx, prefix, ds), task=task, attack=attack, info=info, subset=n,
            square_queries=queries, seed=seed,
        )  # fmt: skip
        for kind, report in reports.items():
            if report.status != "pass":
                logger.warning(
                    "evaluation check %s for %s %s %s (%s): %s", report.status.upper(),
                    ident["encoder"], ident["dataset"], task, kind,
                    ", ".join(report.failed + report.warned),
                )  # fmt: skip
            ctx.store.add("checks", {
                "task": task, **ident, "attack": kind, "status": report.status,
                "failed": report.failed, "warned": report.warned, "report": report.to_dict(),
            })  # fmt: skip
    timings["checks_seconds"] = timings.get("checks_seconds", 0.0) + time.perf_counter() - clock


def _curves(
    ctx: RunContext,
    encoder: nn.Module,
    tokens: str,
    info: DatasetInfo,
    group: dict[str, nn.Module],
    data: SampleDataset,
    ds: DatasetSpec,
) -> EvalResult:
    a = ctx.spec.attack
    prefix = torch.utils.data.Subset(data, range(min(a.curve_subset, len(data))))
    attacks: dict[str, AttackLike] = {}
    for eps in a.curve_eps:
        attacks.update(_attacks(ctx, encoder, tokens, info, eps, f"@{eps!r}"))
    return evaluate(
        group,
        _loader(ctx, prefix, ds),
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
    for name in ctx.spec.attack.suite:
        column = get_suite(name).column if name != "paper" else None
        if column is not None and column in main:
            row[column] = main[column]
    logger.info(
        "%s %s %s: clean %.3f, EmbedAttack %.3f, %s %.3f%s",
        ident["encoder"], ident["dataset"], task, row["clean"], row["embed_attack"],
        spec.attack_label, row["task_attack"],
        f", strong_attack {row['strong_attack']:.3f}" if "strong_attack" in row else "",
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
