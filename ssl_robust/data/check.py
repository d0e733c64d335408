"""Check a dataset folder before a run: the layout found, the samples per split, one sample's
shapes, dtypes and value ranges, and what is missing with how to fix it.

``ssl-robust data check NAME ROOT [--split S]`` prints :meth:`DatasetReport.to_text` and exits
with code 2 when the data is unusable; ``ssl-robust bench --dry-run`` runs the same checks on
every dataset root of a config.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import _checks
from .base import DatasetInfo, SampleDataset
from .registry import create_dataset, list_datasets

__all__ = ["DatasetReport", "SplitReport", "check_dataset"]

_SPLITS = ("train", "val")
# Sizes of the official evaluation splits (a partial copy gets a note, not a problem).
_OFFICIAL_COUNTS = {
    ("cifar10", "val"): 10_000,
    ("cifar100", "val"): 10_000,
    ("stl10", "val"): 8_000,
    ("imagenet", "val"): 50_000,
    ("voc2012", "val"): 1_449,
    ("cityscapes", "val"): 500,
    ("ade20k", "val"): 2_000,
    ("nyu_depth_v2", "val"): 654,
}
# Errors a wrong folder gives: reported, not raised.
_DATA_ERRORS = (OSError, ValueError, TypeError, ImportError, KeyError, IndexError)


@dataclass
class SplitReport:
    """What one split of a dataset folder holds.

    Attributes:
        split: the split name asked for.
        count: samples in it (None when it could not be opened).
        layout: the layout detected (e.g. ``fast-depth-h5``; the reader's name when it has
            only one).
        description: where the files were found.
        sample: field → ``{"shape", "dtype", "min", "max"}`` of sample 0, plus what was
            checked (``"valid"``: share of valid depth pixels, ``"labels"``: the classes seen).
        problems: what makes this split unusable, each with how to fix it.
        notes: facts worth knowing that do not make it unusable (e.g. a count that differs
            from the full official split: a partial copy).
        info: the dataset's facts, when the split opened.
        error: the exception that made it unusable, if one did.
    """

    split: str
    count: int | None = None
    layout: str = ""
    description: str = ""
    sample: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    info: DatasetInfo | None = field(default=None, repr=False)
    error: BaseException | None = field(default=None, repr=False, compare=False)


@dataclass
class DatasetReport:
    """The result of :func:`check_dataset`.

    Attributes:
        name: the dataset name.
        root: the folder checked.
        splits: one :class:`SplitReport` per split checked.
        info: the dataset's facts (tasks, classes, depth range) when a split opened.
    """

    name: str
    root: str | None
    splits: list[SplitReport]
    info: DatasetInfo | None = None

    @property
    def problems(self) -> list[str]:
        """Every problem, prefixed with its split."""
        return [f"{s.split}: {p}" for s in self.splits for p in s.problems]

    @property
    def usable(self) -> bool:
        """True when every split checked opened and its sample passed the checks."""
        return not self.problems

    def raise_if_unusable(self) -> None:
        """Raise the first split's error as it came (its type and message), or a
        :class:`~ssl_robust._checks.SSLRobustValueError` listing the problems."""
        for s in self.splits:
            if s.error is not None:
                raise s.error
        if self.problems:
            raise _checks.SSLRobustValueError(
                f"dataset {self.name!r} at {self.root}: " + "; ".join(self.problems)
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: name, root, usable, problems and each split's facts."""
        return {
            "name": self.name,
            "root": self.root,
            "usable": self.usable,
            "problems": self.problems,
            "splits": [
                {
                    k: getattr(s, k)
                    for k in ("split", "count", "layout", "description", "sample", "notes")
                }
                for s in self.splits
            ],
        }

    def to_text(self) -> str:
        """The report as printable lines."""
        lines = [f"dataset {self.name!r} at {self.root}"]
        for s in self.splits:
            if s.count is None:
                lines.append(f"  {s.split}: not usable")
                continue
            lines.append(f"  {s.split}: {s.count} samples, layout {s.layout}: {s.description}")
            lines += [f"    note: {n}" for n in s.notes]
            for key, facts in s.sample.items():
                extra = "; ".join(f"{k} {v}" for k, v in facts.items() if k not in _SHOWN)
                lines.append(
                    f"    sample 0 {key:<6}{facts['shape']!s:<16}{facts['dtype']:<9}"
                    f"min {facts['min']:.4g} max {facts['max']:.4g}"
                    + (f"; {extra}" if extra else "")
                )
        if self.info is not None:
            i = self.info
            about = [f"tasks {list(i.tasks)}"]
            if i.num_classes:
                about.append(f"{i.num_classes} classes")
            if i.seg_classes:
                about.append(f"{i.seg_classes} mask classes, ignore index {i.ignore_index}")
            if "depth" in i.tasks:
                about.append(f"depth in metres, valid in ({i.min_depth:g}, {i.max_depth:g}]")
            lines.append("  " + ", ".join(about))
        if self.usable:
            lines.append("usable: yes")
        else:
            lines.append("usable: NO — to fix:")
            grouped: dict[str, list[str]] = {}
            for split in self.splits:
                for problem in split.problems:
                    grouped.setdefault(problem, []).append(split.split)
            for problem, names in grouped.items():
                text = problem.replace("\n", "\n      ")
                lines.append(f"  - {', '.join(names)}: {text}")
        return "\n".join(lines)


_SHOWN = ("shape", "dtype", "min", "max")


def _facts(value: Tensor) -> dict[str, Any]:
    v = value.as_subclass(Tensor)
    lo, hi = (float(v.min()), float(v.max())) if v.numel() else (0.0, 0.0)
    return {"shape": tuple(v.shape), "dtype": str(v.dtype).replace("torch.", ""), "min": lo,
            "max": hi}  # fmt: skip


def _check_sample(sample: dict[str, Tensor], info: DatasetInfo) -> tuple[dict[str, Any], list[str]]:
    facts: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for key, value in sample.items():
        if isinstance(value, Tensor):
            facts[key] = _facts(value)
    image = sample.get("image")
    if image is None or image.ndim != 3 or image.shape[0] != 3 or not image.is_floating_point():
        problems.append(f"sample 0 has no (3, H, W) float image; got {facts.get('image')}")
    elif facts["image"]["min"] < 0 or facts["image"]["max"] > 1:
        problems.append("sample 0's image is outside [0, 1]; the reader must divide by 255")
    for task, key in (("classification", "label"), ("segmentation", "mask"), ("depth", "depth")):
        if task in info.tasks and key not in sample:
            problems.append(f"the dataset says it has {task} targets but sample 0 has no {key!r}")
    if "label" in sample:
        label = int(sample["label"])
        facts["label"]["classes"] = info.num_classes
        if not 0 <= label < info.num_classes:
            problems.append(
                f"label {label} outside [0, {info.num_classes - 1}] of {info.num_classes} classes"
            )
    if "mask" in sample:
        mask = sample["mask"].as_subclass(Tensor)
        labelled = mask[mask != info.ignore_index]
        seen = sorted(set(torch.unique(labelled).tolist()))
        facts["mask"]["classes seen"] = len(seen)
        facts["mask"]["ignore index"] = info.ignore_index
        bad = [c for c in seen if not 0 <= c < info.seg_classes]
        if bad:
            problems.append(
                f"mask values {bad[:5]} outside [0, {info.seg_classes - 1}] (ignore index "
                f"{info.ignore_index}): wrong label ids (e.g. Cityscapes labelIds not mapped "
                "to train ids, ADE20k without reduce_zero_label)"
            )
    if "depth" in sample:
        depth = sample["depth"].as_subclass(Tensor)
        valid = (depth > info.min_depth) & (depth <= info.max_depth)
        share = float(valid.float().mean()) if depth.numel() else 0.0
        facts["depth"]["valid"] = (
            f"{100 * share:.1f}% in ({info.min_depth:g}, {info.max_depth:g}] m"
        )
        top = facts["depth"]["max"]
        if bool((depth < 0).any()) or not bool(torch.isfinite(depth).all()):
            problems.append("depth has negative or non-finite values; expected metres, 0 = invalid")
        elif top > 100 * info.max_depth:
            problems.append(
                f"depth reaches {top:.4g}, far above max_depth {info.max_depth:g} m: millimetres "
                "read as metres? (16-bit PNG depth is divided by 1000)"
            )
        elif share == 0.0:
            problems.append(
                f"no depth pixel of sample 0 lies in ({info.min_depth:g}, {info.max_depth:g}] m"
            )
    return facts, problems


def _read_every_sample(dataset: SampleDataset) -> list[str]:
    failures: list[str] = []
    first = ""
    for index in range(len(dataset)):
        try:
            dataset[index]
        except _DATA_ERRORS as exc:
            failures.append(str(index))
            first = first or str(exc).strip()
    if not failures:
        return []
    shown = ", ".join(failures[:5]) + (", …" if len(failures) > 5 else "")
    return [
        f"{len(failures)} of {len(dataset)} samples cannot be read (indices {shown}); "
        f"the first: {first}"
    ]


def _check_split(
    name: str, root: Any, split: str, options: dict[str, Any], read_all: bool
) -> SplitReport:
    report = SplitReport(split=split)
    try:
        dataset: SampleDataset = create_dataset(name, root, split, **options)
    except _DATA_ERRORS as exc:
        report.error = exc
        report.problems.append(str(exc).strip() or type(exc).__name__)
        if root is not None and name not in ("hf_disk", "nyu_depth_v2"):
            folder = Path(root)
            if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
                report.problems.append(
                    f"{folder} is a Hugging Face save_to_disk folder: read it as 'hf_disk' with "
                    "its columns, e.g. ssl-robust data check hf_disk ROOT --option "
                    '\'columns={"image": "image", "mask": "annotation"}\' --option '
                    "seg_classes=150"
                )
        return report
    report.count, report.info = len(dataset), dataset.info
    full = _OFFICIAL_COUNTS.get((name, "val" if split == "test" else split))
    if full is not None and report.count != full:
        report.notes.append(
            f"the official {split} split has {full} samples; this copy has {report.count} "
            "(a partial copy? results will not compare with published ones)"
        )
    report.layout = str(getattr(dataset, "layout", name))
    doc = (type(dataset).__doc__ or type(dataset).__name__).strip().splitlines()[0]
    report.description = str(getattr(dataset, "description", doc))
    if report.count == 0:
        report.problems.append("no samples found: check the folder against docs/data.md")
        return report
    try:
        sample = dataset[0]
    except _DATA_ERRORS as exc:
        report.error = exc
        report.problems.append(f"sample 0 cannot be read: {str(exc).strip()}")
        return report
    fields = {k: v for k, v in sample.items() if isinstance(v, Tensor)}
    report.sample, problems = _check_sample(fields, dataset.info)
    report.problems += problems
    if read_all:
        report.problems += _read_every_sample(dataset)
    return report


def check_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    split: str | None = None,
    read_all: bool = False,
    **options: Any,
) -> DatasetReport:
    """Check a dataset folder: layout, samples per split, one sample, problems and fixes.

    Nothing raises for bad data: every problem is in the report (``report.usable`` is False
    and ``report.problems`` says what to fix). Only an unknown ``name`` raises.

    Args:
        name: a :func:`~ssl_robust.data.list_datasets` name.
        root: the folder (None for ``shapes``).
        split: check this split only; None checks ``train`` and ``val``.
        read_all: read every sample, not only the first (finds truncated or unreadable
            files; as slow as an epoch without a model).
        **options: ``create_dataset`` options of the reader (e.g. ``columns=`` for
            ``hf_disk``, ``layout=`` for ``nyu_depth_v2``).

    Returns:
        A :class:`DatasetReport`; ``print(report.to_text())`` shows it.

    Raises:
        SSLRobustValueError: an unknown dataset name (listing the choices).

    Example:
        >>> report = check_dataset("shapes", split="val", size=4, image_size=16)
        >>> report.usable, report.splits[0].count, report.splits[0].sample["image"]["shape"]
        (True, 4, (3, 16, 16))
        >>> check_dataset("nyu_depth_v2", "/nonexistent", split="val").usable
        False
    """
    if name not in list_datasets():
        close = difflib.get_close_matches(str(name), list_datasets(), n=1)
        hint = f" — did you mean {close[0]!r}?" if close else ""
        raise _checks.SSLRobustValueError(
            f"unknown dataset {name!r}{hint}; choose one of: {', '.join(list_datasets())}"
        )
    splits = [split] if split is not None else list(_SPLITS)
    reports = [_check_split(name, root, s, dict(options), read_all) for s in splits]
    info = next((s.info for s in reports if s.info is not None), None)
    return DatasetReport(
        name=name, root=None if root is None else str(root), splits=reports, info=info
    )
