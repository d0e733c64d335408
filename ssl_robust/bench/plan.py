"""``ssl-robust bench --dry-run``: check a config and estimate its cost without running it.

:func:`plan_benchmark` checks and opens every dataset split the run reads with
:func:`ssl_robust.data.check_dataset` (a missing root or a wrong layout fails here, with the
expected layouts; one sample per split is read and its targets checked), checks every
weights file, builds each encoder architecture (random weights, no download) to count its
parameters, and lists the cells:
encoders × datasets × tasks × attacks, with the forward passes they take and an estimate of
the peak memory of one rank. A plan whose estimate exceeds the memory of the machine (the
GPU's for a CUDA run, the RAM for a CPU run) is refused with the figures.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import _checks
from ..data import check_dataset
from ..encoders import create_encoder
from ..runtime import parse_device
from ..tasks import get_task
from .data import dataset_info, open_dataset
from .spec import BenchSpec
from .suites import get_suite

__all__ = ["BenchPlan", "machine_memory", "plan_benchmark", "suite_lines"]

_GB = 1024**3


@dataclass
class BenchPlan:
    """What a benchmark would do, and what it would need.

    Attributes:
        cells: one dict per encoder × dataset × task: attacks, evaluation images, forward
            passes (clean + attacks + curves, on this rank's share) and ``suites``, the
            forward passes of each attack suite (``{"paper": ..., "strong": ...}``).
        forward_passes: total image forward passes of the evaluation, all ranks.
        peak_bytes: estimated peak memory of one rank.
        machine_bytes: memory of the device the run would use.
        world_size: ranks assumed.
        notes: the assumptions behind the estimate.
        steps: attack steps per suite: ``{"paper": steps of EmbedAttack and the task
            attacks, "strong": steps of each strong_attack member}`` (suites run only).
    """

    cells: list[dict[str, Any]] = field(default_factory=list)
    forward_passes: int = 0
    peak_bytes: int = 0
    machine_bytes: int = 0
    world_size: int = 1
    notes: list[str] = field(default_factory=list)
    steps: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        """The plan as printable lines."""
        lines = [f"{'encoder':<24}{'dataset':<14}{'task':<15}{'images':>7}{'attacks':>9}"
                 f"{'forwards':>11}"]  # fmt: skip
        for c in self.cells:
            lines.append(
                f"{c['encoder']:<24}{c['dataset']:<14}{c['task']:<15}{c['images']:>7}"
                f"{len(c['attacks']):>9}{c['forward_passes']:>11}"
            )
        per_task = {c["task"]: c["attacks"] for c in self.cells}
        lines += [f"{task} attacks: {', '.join(a)}" for task, a in per_task.items()]
        lines.append(
            f"{len(self.cells)} cell(s), {self.forward_passes} image forward passes in all, "
            f"{self.world_size} rank(s)"
        )
        lines.append(
            f"estimated peak memory per rank: {self.peak_bytes / _GB:.2f} GiB "
            f"(machine: {self.machine_bytes / _GB:.1f} GiB)"
        )
        lines += [f"  - {n}" for n in self.notes]
        lines += suite_lines(self)
        return "\n".join(lines)


def suite_lines(plan: BenchPlan) -> list[str]:
    """The steps of each attack suite and its share of the forward passes (the end of
    :meth:`BenchPlan.summary`): the strong suite's ``strong_steps`` (default 100, separate
    from ``steps``) often costs far more than the paper's attacks.

    Example:
        >>> plan = BenchPlan(steps={"paper": 20, "strong": 100}, forward_passes=1000,
        ...                  cells=[{"suites": {"paper": 100, "strong": 900}}])
        >>> print("\\n".join(suite_lines(plan)))
        attack steps and share of the forward passes, per suite:
          paper: 20 steps per attack (EmbedAttack, task attack, curves), 100 forward passes (10 %)
          strong: 100 steps per member ([attack] strong_steps), 900 forward passes (90 %)
    """
    if not plan.steps:
        return []
    totals = {
        name: sum(c.get("suites", {}).get(name, 0) for c in plan.cells) for name in plan.steps
    }
    what = {"paper": "steps per attack (EmbedAttack, task attack, curves)",
            "strong": "steps per member ([attack] strong_steps)"}  # fmt: skip
    lines = ["attack steps and share of the forward passes, per suite:"]
    for name, steps in plan.steps.items():
        share = 100 * totals[name] / max(plan.forward_passes, 1)
        lines.append(
            f"  {name}: {steps} {what.get(name, 'steps')}, {totals[name]:,} forward passes "
            f"({share:.0f} %)"
        )
    return lines


def machine_memory(device: torch.device) -> int:
    """Bytes of memory of ``device``: the GPU's total memory, or the machine's RAM."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 1 << 62


def _activation_bytes(enc: Any, batch: int, size: int, heads_out: int) -> int:
    """Activations kept for one attack step's backward pass, in float32 bytes."""
    patch = int(getattr(enc, "patch_size", 16))
    tokens = (size // patch) ** 2 + 1 + int(getattr(enc, "num_register_tokens", 0))
    dim = int(enc.embed_dim)
    depth = len(getattr(enc, "blocks", [])) or 12
    nheads = int(getattr(getattr(getattr(enc, "blocks", [None])[0], "attn", None), "num_heads", 6))
    per_block = 12 * tokens * dim + 2 * nheads * tokens * tokens  # x, qkv, mlp 4×, norms; attn
    pixels = size * size
    head = 4 * heads_out * pixels  # logits, their gradient, softmax and loss terms
    return 4 * batch * (depth * per_block + head + 6 * 3 * pixels)


def plan_benchmark(spec: BenchSpec, *, world_size: int = 1, device: str | None = None) -> BenchPlan:
    """Validate ``spec`` and estimate its work and peak memory per rank (no training, no
    attack, no download).

    Raises:
        FileNotFoundError: a dataset root with another layout, a missing weights file.
        SSLRobustValueError: a dataset lacking a task's targets, a bad device, or an
            estimated peak memory above the machine's (with both figures).
    """
    dev = parse_device(device or spec.device)
    plan = BenchPlan(world_size=world_size, machine_bytes=machine_memory(dev))
    plan.steps = {"paper": spec.attack.steps}
    if "strong" in spec.attack.suite:
        plan.steps["strong"] = spec.attack.strong_steps
    for entry in spec.encoders:
        for path in (entry.weights, entry.deacl.checkpoint if entry.deacl else None):
            if path is not None and not Path(path).is_file():
                raise FileNotFoundError(f"encoder {entry.name!r}: weights file {path!r} not found")
    archs: dict[str, Any] = {}
    params = 0
    for entry in spec.encoders:
        base = entry
        while base.deacl is not None:
            base = next(e for e in spec.encoders if e.name == base.deacl.base)
        if base.name not in archs:
            archs[base.name] = create_encoder(base.registry, **base.options)
        params += sum(p.numel() for p in archs[base.name].parameters())
    a, ev = spec.attack, spec.eval
    peak_act = 0
    for ds in spec.datasets:
        info = None
        read = (ds.train_split, ds.eval_split) if ds.tasks else (ds.train_split,)  # DeACL only
        for split in dict.fromkeys(read):
            if ds.dataset != "shapes":  # the checks of `ssl-robust data check`
                check_dataset(ds.dataset, ds.root, split=split, **ds.options).raise_if_unusable()
            data = open_dataset(ds, split, subset=ev.subset if split == ds.eval_split else None,
                                seed=ev.seed)  # fmt: skip
            info = dataset_info(data)
            n_eval = len(data)
        assert info is not None
        _checks.check_tasks_present(ds.tasks, info, dataset=f"{ds.name!r} ({ds.dataset})")
        for entry in spec.encoders:
            base = entry
            while base.deacl is not None:
                base = next(e for e in spec.encoders if e.name == base.deacl.base)
            enc = archs[base.name]
            for task in ds.tasks:
                t = get_task(task)
                outs = info.num_classes if not t.dense else (info.seg_classes or 256)
                peak_act = max(peak_act, _activation_bytes(enc, ev.batch_size, ds.image_size, outs))
                attacks = ["EmbedAttack", t.attack_label]
                per_image = 1 + len(attacks) * (1 + (a.steps + 1))  # clean; attack + predict
                strong = 0
                if "strong" in a.suite:  # at most: every run on every image, + judging
                    members = t.make_strong_attack(torch.nn.Identity(), info, steps=1).attacks
                    runs = sum(
                        min(m.n_target_classes, max(outs - 1, 1)) if getattr(m, "targeted", 0)
                        else 1
                        for m in members
                    )  # fmt: skip
                    attacks.append(f"strong_attack ({runs} runs × {a.strong_steps} steps)")
                    strong = n_eval * (2 + runs * (a.strong_steps + 2))
                for name in a.suite:
                    if name not in ("paper", "strong"):  # registered suites: steps unknown
                        attacks.append(f"{get_suite(name).column} (forwards not estimated)")
                curve_imgs = min(a.curve_subset, n_eval)
                paper = n_eval * per_image + curve_imgs * len(a.curve_eps) * 2 * (a.steps + 2)
                forwards = paper + strong
                plan.cells.append(
                    {"encoder": entry.name, "dataset": ds.name, "task": task,
                     "images": n_eval, "attacks": attacks, "forward_passes": forwards,
                     "suites": {"paper": paper, **({"strong": strong} if strong else {})}}
                )  # fmt: skip
                plan.forward_passes += forwards
    param_bytes = 4 * params
    gallery = 4 * ev.gallery * 3 * max(d.image_size for d in spec.datasets) ** 2 * 8
    plan.peak_bytes = int(param_bytes * 1.5 + peak_act + gallery + 512 * 1024**2)
    plan.notes = [
        f"parameters of every encoder held at once: {param_bytes / _GB:.2f} GiB (float32)",
        f"activations of the largest attack batch ({ev.batch_size} images, forward + "
        f"backward): {peak_act / _GB:.2f} GiB",
        "evaluation streams: memory does not grow with the number of evaluation images",
        "plus 0.5 GiB for the framework; DeACL fine-tuning not included (see deacl.batch_size)",
    ]
    if plan.peak_bytes > plan.machine_bytes:
        raise _checks.SSLRobustValueError(
            f"the estimated peak memory per rank, {plan.peak_bytes / _GB:.1f} GiB, exceeds the "
            f"{plan.machine_bytes / _GB:.1f} GiB of {dev}; lower eval.batch_size (now "
            f"{ev.batch_size}) or the image sizes"
        )
    return plan
