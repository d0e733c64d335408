"""The results store: ``results.json`` of one benchmark, resumable cell by cell.

Every finished cell (a row, a curve, a gallery, a DeACL epoch record) is added and the whole
file rewritten atomically by rank 0 at once, so a rerun after a crash resumes from the cells
already written. A directory holding results of another config is refused unless forced.
"""

from __future__ import annotations

import json
import platform
import shutil
from pathlib import Path
from typing import Any

import torch

from .. import __version__, _checks
from ..runtime import atomic_save, atomic_write_json, barrier, is_main
from .spec import BenchSpec

__all__ = ["ResultsStore", "config_differences"]

_SECTIONS = ("rows", "curves", "deacl_history", "galleries", "checks")
_SUBDIRS = ("heads", "encoders", "deacl", "galleries", "figures")
_UNHASHED = ("out", "device", "threads")  # keys that do not change results


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> dict[str, Any]:
    """Nested config dicts and lists as ``{"attack.steps": 20, "datasets['shapes'].size": ..}``;
    list items are named by their ``name`` key when they have one."""
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, item in enumerate(value):
            _flatten(item, f"{prefix}[{item.get('name', i)!r}]", out)
    else:
        out[prefix] = value
    return out


def config_differences(stored: Any, current: dict[str, Any]) -> list[str]:
    """The keys where a stored config (``results.json``'s ``config``) differs from the
    current one, as ``"key: stored X, now Y"`` (``out``, ``device`` and ``threads`` ignored,
    as in the fingerprint).

    Example:
        >>> config_differences({"attack": {"steps": 20}, "out": "a"},
        ...                    {"attack": {"steps": 3}, "out": "b"})
        ['attack.steps: stored 20, now 3']
    """
    if not isinstance(stored, dict):
        return []
    old = _flatten({k: v for k, v in stored.items() if k not in _UNHASHED}, "", {})
    new = _flatten({k: v for k, v in current.items() if k not in _UNHASHED}, "", {})
    missing = object()

    def show(value: Any) -> str:
        return "not set" if value is missing else repr(value)

    return [
        f"{key}: stored {show(old.get(key, missing))}, now {show(new.get(key, missing))}"
        for key in sorted(set(old) | set(new))
        if old.get(key, missing) != new.get(key, missing)
    ]


class ResultsStore:
    """``out/results.json`` and the files next to it (heads, galleries, encoders).

    Args:
        out: the output directory.
        spec: the benchmark; its fingerprint guards the directory.
        world_size: number of ranks (recorded in ``results.json``).
    """

    def __init__(self, out: Path, spec: BenchSpec, *, world_size: int = 1) -> None:
        self.out = out
        self.spec = spec
        self.results: dict[str, Any] = {key: [] for key in _SECTIONS}
        self.results["world_size"] = world_size

    @property
    def path(self) -> Path:
        return self.out / "results.json"

    def prepare(self, *, force: bool) -> None:
        """Load the cells of a previous run of the same config, or start afresh."""
        fingerprint = self.spec.fingerprint()
        if self.path.exists():
            try:
                old = json.loads(self.path.read_text())
            except json.JSONDecodeError:
                old = {}
            if old.get("fingerprint") != fingerprint and not force:
                diffs = config_differences(old.get("config"), self.spec.to_dict())
                what = (
                    "; ".join(diffs)
                    if diffs
                    else f"fingerprint {old.get('fingerprint')} vs {fingerprint}"
                )
                raise _checks.SSLRobustValueError(
                    f"{self.out} holds results of a different benchmark config ({what}); pass "
                    "force=True (--force) to discard them, or choose another output directory"
                )
            if old.get("fingerprint") == fingerprint:
                for key in _SECTIONS:
                    self.results[key] = list(old.get(key, []))
            elif is_main():
                for sub in _SUBDIRS:
                    shutil.rmtree(self.out / sub, ignore_errors=True)
        barrier()
        self.results.update(
            fingerprint=fingerprint,
            config=self.spec.to_dict(),
            versions={
                "ssl_robust": __version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
        )
        if is_main():
            for sub in ("heads", "encoders", "galleries"):
                (self.out / sub).mkdir(parents=True, exist_ok=True)
        barrier()

    def save(self) -> None:
        """Rewrite ``results.json`` atomically (rank 0 only)."""
        if is_main():
            atomic_write_json(self.results, self.path)

    def done(self, task: str, dataset: str, encoder: str) -> bool:
        """Whether the row of this cell is already there."""
        return any(
            r["task"] == task and r["dataset"] == dataset and r["encoder"] == encoder
            for r in self.results["rows"]
        )

    def add(self, section: str, record: dict[str, Any]) -> None:
        """Append a record to ``rows``, ``curves``, ``galleries`` or ``checks`` and save."""
        self.results[section].append(record)
        self.save()

    def set_history(self, record: dict[str, Any]) -> None:
        """Add (or replace) the DeACL record of ``(encoder, epoch)`` and save."""
        key = (record["encoder"], record["epoch"])
        self.results["deacl_history"] = [
            h for h in self.results["deacl_history"] if (h["encoder"], h["epoch"]) != key
        ] + [record]
        self.save()

    def save_file(self, obj: object, rel: str | Path) -> Path:
        """``torch.save`` a file under ``out`` atomically (rank 0 only); its relative path."""
        rel = Path(rel)
        if is_main():
            atomic_save(obj, self.out / rel)
        return rel
