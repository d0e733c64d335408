"""A benchmark config checked whole: every problem at once, each with its fix.

``ssl-robust bench --dry-run`` runs :func:`config_problems`: a list of small check functions
(:data:`CONFIG_CHECKS`), each reading the parsed config and returning :class:`Problem` s,
instead of stopping at the first error. A config that builds is then planned (memory, cells)
by :func:`~ssl_robust.bench.plan.plan_benchmark`. Extend the list with your own check::

    from ssl_robust.bench.problems import CONFIG_CHECKS, Problem

    def check_my_thing(config, device):
        return [Problem("what is wrong", "how to fix it")] if ... else []

    CONFIG_CHECKS.append(check_my_thing)

Example:
    >>> config = {"device": "tpu", "encoders": [{"name": "e", "registry": "vit_tset"}],
    ...           "datasets": [{"name": "d", "dataset": "shapes", "tasks": ["classification"]}]}
    >>> for p in config_problems(config):
    ...     print(p.what.split(";")[0])
    device must be 'cpu', 'cuda', 'cuda:N' or 'mps'
    encoders[0] (e): unknown encoder 'vit_tset' — did you mean 'vit_test'?
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import _checks

__all__ = ["CONFIG_CHECKS", "ConfigCheck", "Problem", "config_problems"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config: ``what`` (expected vs got) and ``fix`` (what to do)."""

    what: str
    fix: str

    def __str__(self) -> str:
        return f"{self.what}\n    fix: {self.fix}"


#: ``(config, device) -> [Problem, ...]``: ``config`` is the parsed TOML mapping, ``device``
#: the ``--device`` override (None: the config's own).
ConfigCheck = Callable[[Mapping[str, Any], "str | None"], list[Problem]]


def _entries(config: Mapping[str, Any], key: str) -> list[tuple[int, Mapping[str, Any]]]:
    raw = config.get(key, [])
    if not isinstance(raw, list):
        return []
    return [(i, e) for i, e in enumerate(raw) if isinstance(e, Mapping)]


def _defense(entry: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for key in ("defense", "deacl"):
        table = entry.get(key)
        if isinstance(table, Mapping):
            return table
    return None


def check_device(config: Mapping[str, Any], device: str | None) -> list[Problem]:
    """The device names a device this machine has."""
    from ..runtime import parse_device
    from .spec import _DEVICE

    value = device or config.get("device", "cpu")
    if not isinstance(value, str) or not _DEVICE.match(value):
        return [
            Problem(
                f"device must be 'cpu', 'cuda', 'cuda:N' or 'mps'; got {value!r}",
                "set device = 'cpu' (or 'cuda') in the config, or pass --device cpu",
            )
        ]
    try:
        parse_device(value)
    except _checks.SSLRobustValueError as err:
        return [Problem(str(err), "run on a node with that device, or pass --device cpu")]
    return []


def check_names(config: Mapping[str, Any], device: str | None) -> list[Problem]:
    """Encoders, datasets, tasks, suites and defenses name registered entries."""
    from ..data import list_datasets
    from ..encoders import encoder_spec
    from ..encoders.hub import is_hub_name
    from ..tasks import check_task_name
    from .spec import parse_suite
    from .suites import get_defense

    problems = []
    hint = "check the spelling, or install / import (--plugin MODULE) the package that has it"
    for i, e in _entries(config, "encoders"):
        name = e.get("name", "?")
        defense = _defense(e)
        if defense is not None:
            try:
                get_defense(str(defense.get("method", "deacl")))
            except _checks.SSLRobustValueError as err:
                problems.append(Problem(f"encoders[{i}] ({name}): {err}", hint))
            continue
        registry = e.get("registry", "")
        if isinstance(registry, str) and registry and not is_hub_name(registry):
            try:
                encoder_spec(registry)
            except (_checks.SSLRobustValueError, _checks.SSLRobustTypeError) as err:
                problems.append(Problem(f"encoders[{i}] ({name}): {err}", hint))
    for i, d in _entries(config, "datasets"):
        name = d.get("name", "?")
        dataset = d.get("dataset")
        if dataset not in list_datasets():
            from ..data.registry import _REGISTRY

            problems.append(
                Problem(f"datasets[{i}] ({name}): {_REGISTRY.unknown_message(dataset)}", hint)
            )
        for task in d.get("tasks", []) or []:
            try:
                check_task_name(f"datasets[{i}] ({name}).tasks", task)
            except _checks.SSLRobustValueError as err:
                problems.append(Problem(str(err), hint))
    attack = config.get("attack", {})
    if isinstance(attack, Mapping) and "suite" in attack:
        try:
            parse_suite(attack["suite"])
        except (_checks.SSLRobustValueError, _checks.SSLRobustTypeError) as err:
            problems.append(Problem(str(err), hint))
    return problems


def check_weights(config: Mapping[str, Any], device: str | None) -> list[Problem]:
    """Every weights file and defense checkpoint exists."""
    problems = []
    for i, e in _entries(config, "encoders"):
        defense = _defense(e) or {}
        for key, path in (("weights", e.get("weights")), ("checkpoint", defense.get("checkpoint"))):
            if isinstance(path, str) and not Path(path).is_file():
                problems.append(
                    Problem(
                        f"encoders[{i}] ({e.get('name', '?')}): weights file {path!r} not found",
                        f"fix the path of {key} (relative paths are relative to the working "
                        "directory), or remove it to use the registry's weights",
                    )
                )
    return problems


def check_roots(config: Mapping[str, Any], device: str | None) -> list[Problem]:
    """Every dataset split the run reads passes the checks of ``ssl-robust data check``.

    A dataset entry without tasks (read by DeACL only) is checked on its train split only.
    """
    from ..data import check_dataset, dataset_entry, list_datasets
    from .spec import check_dataset_options

    problems = []
    for i, d in _entries(config, "datasets"):
        name, dataset = d.get("name", "?"), d.get("dataset")
        if dataset not in list_datasets():
            continue  # reported by check_names
        root = d.get("root")
        if dataset_entry(str(dataset)).needs_root and root is None:
            problems.append(
                Problem(
                    f"datasets[{i}] ({name}): dataset {dataset!r} needs root=",
                    "set root to the folder that holds the data (see docs/data.md)",
                )
            )
            continue
        train = str(d.get("train_split", "train"))
        read = (train, str(d.get("eval_split", "val"))) if d.get("tasks") else (train,)
        options = d.get("options", {}) or {}
        for split in dict.fromkeys(read):
            try:
                check_dataset_options(options, f"datasets[{name!r}].options")
                report = check_dataset(str(dataset), root, split=split, **options)
            except (_checks.SSLRobustValueError, _checks.SSLRobustTypeError) as err:
                problems.append(
                    Problem(f"datasets[{i}] ({name}), split {split!r}: {err}", "fix the entry")
                )
                break
            problems.extend(
                Problem(
                    f"datasets[{i}] ({name}): {what}",
                    f"run `ssl-robust data check {dataset} {root or ''}`".rstrip()
                    + " for the layouts accepted (docs/data.md), and put the data under "
                    f"{root!r} in one of them, or fix root",
                )
                for what in report.problems
            )
            if report.problems:
                break  # the other split sits in the same root: one report is enough
    return problems


#: The checks :func:`config_problems` runs, in order; append your own (see the module doc).
CONFIG_CHECKS: list[ConfigCheck] = [check_device, check_names, check_weights, check_roots]


def config_problems(
    config: Mapping[str, Any], *, device: str | None = None, world_size: int = 1
) -> list[Problem]:
    """Every problem of a parsed config, each with its fix (an empty list: all is well).

    Runs :data:`CONFIG_CHECKS`; when none finds anything, builds the spec (any remaining
    error, e.g. a bad value, becomes a problem) and plans it, so a memory estimate beyond the
    machine is a problem too.

    Args:
        config: the parsed TOML (its ``plugins`` are imported first).
        device: the ``--device`` override.
        world_size: ranks assumed for the plan.
    """
    from ..registry import import_plugin

    problems: list[Problem] = []
    for module in config.get("plugins", []) or []:
        try:
            import_plugin(module)
        except ImportError as err:
            problems.append(
                Problem(str(err), "install the plugin, or put its folder on PYTHONPATH")
            )
    for check in CONFIG_CHECKS:
        problems += check(config, device)
    if problems:
        return problems
    from dataclasses import replace

    from .plan import plan_benchmark
    from .spec import spec_from_dict

    try:
        spec = spec_from_dict(config)
        if device:
            spec = replace(spec, device=device)
        plan_benchmark(spec, world_size=world_size)
    except (_checks.SSLRobustValueError, _checks.SSLRobustTypeError, OSError) as err:
        fix = (
            "lower eval.batch_size or the image sizes"
            if "peak memory" in str(err)
            else "fix the key named in the message"
        )
        problems.append(Problem(str(err), fix))
    return problems
