"""The ``results.json`` contract shared by the benchmark runner and the report.

A benchmark output directory holds ``results.json`` with a list of ``rows`` (one per dataset ×
encoder × task: clean / EmbedAttack / task-attack metric) and optional ``curves``,
``deacl_history``, ``galleries``, ``config``, ``versions`` and ``timings`` sections. This module
names the tasks, their metrics and attacks, and validates a loaded results dict, raising one
clear error at the first problem found.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._checks import SSLRobustValueError
from ..tasks import TASKS, TaskSpec, get_task, list_tasks, table_number

__all__ = [
    "ATTACKS",
    "CHECK_FIELDS",
    "CHECK_STATUSES",
    "CURVE_FIELDS",
    "GALLERY_FIELDS",
    "OPTIONAL_ROW_FIELDS",
    "ROW_FIELDS",
    "TASKS",
    "encoder_type_label",
    "load_results",
    "ordered_tasks",
    "suite_columns",
    "suite_label",
    "task_info",
    "task_unknown",
    "validate_results",
]


ATTACKS: tuple[str, ...] = ("embed_attack", "task_attack")
#: The keys every row has.
ROW_FIELDS: tuple[str, ...] = (
    "task",
    "dataset",
    "encoder",
    "encoder_type",
    "metric",
    "clean",
    "embed_attack",
    "task_attack",
)
#: Keys a row has only when its suite ran them (``"strong"``: ``strong_attack``); absent
#: means not run, which is also what ``None`` says.
OPTIONAL_ROW_FIELDS: tuple[str, ...] = ("strong_attack",)
_ID_FIELDS: tuple[str, ...] = ("task", "dataset", "encoder", "encoder_type")
CURVE_FIELDS: tuple[str, ...] = (*_ID_FIELDS, "metric", "attack", "eps", "values")
GALLERY_FIELDS: tuple[str, ...] = (*_ID_FIELDS, "file")
#: The keys of a ``checks`` record (``attack.check``): the cell, the attack checked
#: (``embed_attack`` or ``task_attack``), the overall status, the indicators that failed and
#: warned, and the full report (:meth:`~ssl_robust.reliability.EvaluationReport.to_dict`).
CHECK_FIELDS: tuple[str, ...] = (*_ID_FIELDS, "attack", "status", "failed", "warned", "report")
CHECK_STATUSES: tuple[str, ...] = ("pass", "warn", "fail", "skip")
_ENCODER_TYPES: dict[str, str] = {
    "standard": "Standard",
    "deacl": "DeACL",
    "fare": "FARE",
    "multitask": "multi-task",
}


def suite_columns() -> list[str]:
    """The row keys of the attack suites beyond the paper's (``strong_attack``, registered
    suites' columns), in registration order."""
    from .suites import get_suite, list_suites

    columns = [get_suite(name).column for name in list_suites()]
    return [*OPTIONAL_ROW_FIELDS, *(c for c in columns if c not in OPTIONAL_ROW_FIELDS)]


def suite_label(column: str) -> str:
    """The table title of a suite column."""
    from .suites import get_suite, list_suites

    for name in list_suites():
        if get_suite(name).column == column:
            return get_suite(name).label
    return column


def task_unknown(task: object) -> str:
    """The registry's "unknown task" message (registered names, failed plugins)."""
    try:
        get_task(task)  # type: ignore[arg-type]
    except SSLRobustValueError as err:
        return str(err)
    return f"unknown task {task!r}"  # pragma: no cover


def ordered_tasks(present: Any) -> list[str]:
    """The tasks in ``present`` in table order (the paper's three first)."""
    known = [t for t in list_tasks() if t in set(present)]
    return sorted(known, key=table_number)


def task_info(task: str) -> TaskSpec:
    """The :class:`~ssl_robust.tasks.TaskSpec` of ``task`` (labels, metric, direction)."""
    return get_task(task)


def encoder_type_label(encoder_type: str) -> str:
    """Display name of an encoder type: ``"standard"`` → Standard, ``"deacl"`` → DeACL."""
    return _ENCODER_TYPES.get(encoder_type, encoder_type)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_record(record: object, fields: Sequence[str], where: str) -> Mapping[str, Any]:
    if not isinstance(record, Mapping):
        raise SSLRobustValueError(f"{where} must be a JSON object; got {type(record).__name__}")
    for key in fields:
        if key not in record:
            raise SSLRobustValueError(
                f"{where} is missing the required key {key!r}; expected keys: {', '.join(fields)}"
            )
    for key in _ID_FIELDS:
        if key in fields and not isinstance(record[key], str):
            raise SSLRobustValueError(
                f"{where}: {key!r} must be a string; got {type(record[key]).__name__} "
                f"{record[key]!r}"
            )
    if "task" in fields:
        task = record["task"]
        if task not in list_tasks():
            raise SSLRobustValueError(f"{where}: {task_unknown(task)}")
    if "metric" in fields and record["metric"] != get_task(record["task"]).metric_key:
        raise SSLRobustValueError(
            f"{where}: task {record['task']!r} reports metric "
            f"{get_task(record['task']).metric_key!r}; got {record['metric']!r}"
        )
    return record


def _check_value(value: object, where: str) -> None:
    if value is not None and not _is_number(value):
        raise SSLRobustValueError(
            f"{where} must be a number or null; got {type(value).__name__} {value!r}"
        )


def _section(results: Mapping[str, Any], name: str) -> Sequence[Any]:
    section = results.get(name)
    if section is None:
        return []
    if not isinstance(section, list):
        raise SSLRobustValueError(f"results[{name!r}] must be a list; got {type(section).__name__}")
    return section


def validate_results(results: object) -> None:
    """Check that ``results`` follows the ``results.json`` contract.

    Args:
        results: the loaded JSON document. ``rows`` is required; ``curves``, ``deacl_history``
            and ``galleries`` may be absent, null or empty.

    Raises:
        SSLRobustValueError: (a ``ValueError``) naming the first missing key, unknown task,
            wrong metric, non-numeric value or inconsistent curve.

    Example:
        >>> row = {"task": "depth", "dataset": "nyu", "encoder": "vit", "encoder_type": "standard",
        ...        "metric": "rmse", "clean": 0.5, "embed_attack": 1.3, "task_attack": None}
        >>> validate_results({"rows": [row]})
        >>> try:
        ...     validate_results({"rows": [{**row, "task": "detection"}]})
        ... except ValueError as err:
        ...     print(str(err).split(" (")[0])
        rows[0]: unknown task 'detection'; valid tasks are: classification, segmentation, depth
    """
    if not isinstance(results, Mapping):
        raise SSLRobustValueError(
            f"results must be a JSON object with a 'rows' list; got {type(results).__name__}"
        )
    if "rows" not in results:
        raise SSLRobustValueError("results is missing the required key 'rows'")
    if not isinstance(results["rows"], list):
        raise SSLRobustValueError(
            f"results['rows'] must be a list; got {type(results['rows']).__name__}"
        )
    for i, row in enumerate(results["rows"]):
        rec = _check_record(row, ROW_FIELDS, f"rows[{i}]")
        for key in ("clean", "embed_attack", "task_attack"):
            _check_value(rec[key], f"rows[{i}][{key!r}]")
        for key in suite_columns():
            if key in rec:
                _check_value(rec[key], f"rows[{i}][{key!r}]")
    for i, curve in enumerate(_section(results, "curves")):
        rec = _check_record(curve, CURVE_FIELDS, f"curves[{i}]")
        if rec["attack"] not in ATTACKS:
            raise SSLRobustValueError(
                f"curves[{i}]: unknown attack {rec['attack']!r}; valid attacks are: "
                f"{', '.join(ATTACKS)}"
            )
        eps, values = rec["eps"], rec["values"]
        if not isinstance(eps, list) or not isinstance(values, list) or len(eps) != len(values):
            raise SSLRobustValueError(
                f"curves[{i}]: 'eps' and 'values' must be lists of the same length; got "
                f"{eps!r} and {values!r}"
            )
        for j, e in enumerate(eps):
            if not _is_number(e) or not math.isfinite(e) or e < 0:
                raise SSLRobustValueError(f"curves[{i}]['eps'][{j}] must be >= 0; got {e!r}")
        for j, v in enumerate(values):
            _check_value(v, f"curves[{i}]['values'][{j}]")
    for i, record in enumerate(_section(results, "deacl_history")):
        rec = _check_record(record, ("encoder", "epoch"), f"deacl_history[{i}]")
        if not isinstance(rec["encoder"], str) or not _is_number(rec["epoch"]):
            raise SSLRobustValueError(
                f"deacl_history[{i}]: 'encoder' must be a string and 'epoch' a number; got "
                f"{rec['encoder']!r} and {rec['epoch']!r}"
            )
        for key, value in rec.items():
            if key not in ("encoder", "epoch"):
                _check_value(value, f"deacl_history[{i}][{key!r}]")
    for i, check in enumerate(_section(results, "checks")):
        rec = _check_record(check, CHECK_FIELDS, f"checks[{i}]")
        if rec["attack"] not in ATTACKS or rec["status"] not in CHECK_STATUSES:
            raise SSLRobustValueError(
                f"checks[{i}]: 'attack' must be one of {', '.join(ATTACKS)} and 'status' one of "
                f"{', '.join(CHECK_STATUSES)}; got {rec['attack']!r} and {rec['status']!r}"
            )
    for i, gallery in enumerate(_section(results, "galleries")):
        rec = _check_record(gallery, GALLERY_FIELDS, f"galleries[{i}]")
        if not isinstance(rec["file"], str) or Path(rec["file"]).is_absolute():
            raise SSLRobustValueError(
                f"galleries[{i}]['file'] must be a path relative to the output directory; "
                f"got {rec['file']!r}"
            )


def load_results(out_dir: str | Path) -> dict[str, Any]:
    """Read and validate ``out_dir/results.json``.

    Args:
        out_dir: a benchmark output directory.

    Returns:
        The parsed results dict.

    Raises:
        FileNotFoundError: if ``out_dir/results.json`` does not exist.
        SSLRobustValueError: if the file is not valid JSON or breaks the contract
            (see :func:`validate_results`).
    """
    path = Path(out_dir) / "results.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"no results.json in {str(out_dir)!r}; run `ssl-robust bench --out {out_dir}` first"
        )
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise SSLRobustValueError(
            f"{path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})"
        ) from err
    validate_results(results)
    return dict(results)
