"""The benchmark runner: heads, attacks and metrics for every encoder × dataset × task.

For each encoder (standard, or robust fine-tuned from another entry: DeACL, FARE, multi-task)
and each dataset it trains (and caches) one linear head per task, then evaluates them with the
streaming :func:`ssl_robust.evaluate` on one fixed evaluation subset per dataset, identical for
every encoder and attack: clean, under EmbedAttack (CLS tokens for classification, patch tokens for
dense tasks, computed once per batch for every head on those tokens) and under the task
attack (PGD / SegPGD / DepthPGD). Every finished cell is written to ``results.json`` at once,
and a rerun skips the cells already there.

Under ``torchrun`` the process group is initialized here (gloo on CPU, nccl on CUDA with one
GPU per rank): heads are trained identically on every rank and rank 0's weights are
broadcast, each rank evaluates its shard of the subset, metrics are summed over ranks, and
only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import torch

from .. import _checks
from ..encoders import Encoder, create_encoder
from ..runtime import barrier, init_distributed, rank_world
from ..tasks import get_task
from .cells import evaluate_cells
from .context import RunContext
from .data import dataset_info, open_dataset
from .heads import trained_model
from .spec import BenchSpec, EncoderSpecEntry
from .store import ResultsStore
from .suites import get_defense

__all__ = ["run_benchmark"]

logger = logging.getLogger("ssl_robust.bench")


class _Encoders:
    """The spec's encoders, built (or DeACL fine-tuned) once each, frozen, on the device."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.built: dict[str, Encoder] = {}

    def __call__(self, entry: EncoderSpecEntry) -> Encoder:
        if entry.name in self.built:
            return self.built[entry.name]
        spec = self.ctx.spec
        enc: Encoder
        if entry.deacl is None:
            with torch.random.fork_rng(devices=[]):  # weightless encoders: seeded random init
                torch.manual_seed(spec.seed)
                enc = create_encoder(
                    entry.registry, checkpoint_path=entry.weights, pretrained=entry.pretrained,
                    **entry.options,
                )  # fmt: skip
        else:
            base_entry = next(e for e in spec.encoders if e.name == entry.deacl.base)
            eval_ds = next(d for d in spec.datasets if d.name == entry.deacl.dataset)
            defense = get_defense(entry.deacl.method)
            enc = defense.fine_tune(self.ctx, entry, self(base_entry), eval_ds)
        enc = enc.to(self.ctx.device).eval()
        enc.requires_grad_(False)
        self.built[entry.name] = enc
        return enc


def run_benchmark(
    spec: BenchSpec,
    *,
    out: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
    render: bool = True,
) -> dict[str, Any]:
    """Run the benchmark described by ``spec`` and write its outputs.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) it joins or initializes the process group itself
    and runs one benchmark across the ranks; ``results.json`` records ``world_size``.

    Args:
        spec: the benchmark (see :func:`~ssl_robust.bench.load_spec`,
            :func:`~ssl_robust.bench.default_spec`).
        out: output directory (default ``spec.out``).
        force: discard results of a different config found in ``out``.
        progress: tqdm bars (when tqdm is installed).
        render: write ``tables.md``, ``results.csv`` and the figures when done.

    Returns:
        The content of ``results.json``.

    Raises:
        SSLRobustValueError: ``out`` holds results of another config (without ``force``), a
            dataset lacking a task's targets, unknown names, a device this machine lacks.
        FileNotFoundError: a dataset root or weights file is missing.
    """
    out_dir = Path(out if out is not None else spec.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if spec.threads is not None:
        torch.set_num_threads(spec.threads)
    device = init_distributed(spec.device)
    rank, world = rank_world()
    store = ResultsStore(out_dir, spec, world_size=world)
    store.prepare(force=force)
    ctx = RunContext(spec=spec, store=store, device=device, progress=progress)
    encoders = _Encoders(ctx)
    store.results["timings"] = {"embed_attacks": []}
    start = time.perf_counter()
    phases = dict.fromkeys(("encoders_seconds", "heads_seconds", "evaluation_seconds"), 0.0)
    for entry in spec.encoders:
        for ds in spec.datasets:
            todo = [t for t in ds.tasks if not store.done(t, ds.name, entry.name)]
            if not todo:
                logger.info("skip %s × %s (done)", entry.name, ds.name)
                continue
            data = open_dataset(
                ds, ds.eval_split, subset=spec.eval.subset, seed=spec.eval.seed,
                full=ds.full_images,
            )  # fmt: skip
            info = dataset_info(data)
            _checks.check_tasks_present(todo, info, dataset=f"{ds.name!r} ({ds.dataset})")
            clock = time.perf_counter()
            encoder = encoders(entry)
            phases["encoders_seconds"] += time.perf_counter() - clock
            clock = time.perf_counter()
            models = {
                t: trained_model(ctx, entry.name, encoder, ds, get_task(t).name, info) for t in todo
            }
            phases["heads_seconds"] += time.perf_counter() - clock
            clock = time.perf_counter()
            evaluate_cells(ctx, entry, ds, encoder, data, info, models)
            phases["evaluation_seconds"] += time.perf_counter() - clock
    timings = store.results["timings"]
    timings.update(phases)
    timings.update(
        total_seconds=time.perf_counter() - start,
        embed_attack_seconds=sum(e["seconds"] for e in timings["embed_attacks"]),
        embed_attack_saved_seconds=sum(
            e["seconds"] * (e["heads"] - 1) for e in timings["embed_attacks"]
        ),
    )
    store.save()
    barrier()
    if render and rank == 0:
        from .report import render_report

        with contextlib.suppress(ModuleNotFoundError):
            render_report(out_dir)
    return store.results
