"""Benchmark report: turn a benchmark output directory into tables and figures.

:func:`render_report` reads ``DIR/results.json`` (written by ``ssl-robust bench --out DIR``) and
writes ``DIR/results.csv``, ``DIR/tables.md`` (the layout of Tables 1–3 of Kowalczuk et al.
2024) and, when matplotlib is installed, PNG figures under ``DIR/figures/`` (see
:func:`write_figures`).
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..reliability import EvaluationReport
from ..runtime import atomic_write_json
from ..tasks import table_number
from ._plots import load_matplotlib, write_figures
from ._schema import (
    OPTIONAL_ROW_FIELDS,
    ROW_FIELDS,
    TASKS,
    encoder_type_label,
    load_results,
    ordered_tasks,
    suite_columns,
    suite_label,
    task_info,
    validate_results,
)

__all__ = [
    "ROW_FIELDS",
    "TASKS",
    "load_results",
    "render_report",
    "validate_results",
    "write_checks",
    "write_figures",
    "write_tables",
]

_MISSING = "–"
_TYPE_ORDER = {"standard": 0, "deacl": 1, "fare": 2, "multitask": 3}


def _number(value: object) -> float | None:
    if value is None:
        return None
    v = float(value)  # type: ignore[arg-type]  # validated: int | float
    return None if math.isnan(v) else v


def _fmt(value: object) -> str:
    v = _number(value)
    return _MISSING if v is None else f"{v:.2f}"


def _csv_cell(value: object) -> object:
    if isinstance(value, str):
        return value
    v = _number(value)
    return "" if v is None else repr(v)


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def _relative_change(value: object, clean: object) -> str:
    v, c = _number(value), _number(clean)
    if v is None or c is None or c == 0 or not math.isfinite(v) or not math.isfinite(c):
        return _MISSING
    pct = round(100.0 * (v - c) / abs(c))
    if pct == 0:
        return "0 %"
    return f"{'+' if pct > 0 else '−'}{abs(pct)} %"


def _sort_key(row: Mapping[str, Any]) -> tuple[str, str, int, str]:
    etype = row["encoder_type"]
    return (row["dataset"], row["encoder"], _TYPE_ORDER.get(etype, len(_TYPE_ORDER)), etype)


#: Marks of a cell whose evaluation check warned or failed (``attack.check``).
_MARKS = {"warn": " ⚠", "fail": " ✗"}

Checks = Mapping[tuple[str, str, str, str], Mapping[str, Any]]


def _checks_by_cell(results: Mapping[str, Any]) -> dict[tuple[str, str, str, str], Any]:
    return {
        (c["task"], c["dataset"], c["encoder"], c["attack"]): c for c in results.get("checks") or []
    }


def _mark(checks: Checks, row: Mapping[str, Any], key: str) -> str:
    check = checks.get((row["task"], row["dataset"], row["encoder"], key))
    return _MARKS.get(check["status"], "") if check else ""


def _task_table(
    task: str, rows: list[Mapping[str, Any]], checks: Checks | None = None
) -> list[str]:
    checks = checks or {}
    info = task_info(task)
    label = f"{info.metric_label} {info.arrow}"
    columns = [("EmbedAttack", "embed_attack"), (info.attack_label, "task_attack")]
    for column in suite_columns():
        if any(row.get(column) is not None for row in rows):
            columns.append((suite_label(column), column))
    header = " | ".join(f"{name} {label}" for name, _ in columns)
    lines = [
        f"### Table {table_number(info)}: {task} {info.metric_text} ({info.arrow})",
        "",
        f"| Dataset | Encoder | Encoder Type | Clean {label} | {header} |",
        "|---|---|---|---|" + "---|" * len(columns),
    ]
    rows = sorted(rows, key=_sort_key)
    for row in rows:
        cells = [
            _md(row["dataset"]),
            _md(row["encoder"]),
            _md(encoder_type_label(row["encoder_type"])),
            _fmt(row["clean"]),
            *(_fmt(row.get(key)) + _mark(checks, row, key) for _, key in columns),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    flagged = [
        (row, key, checks[(row["task"], row["dataset"], row["encoder"], key)])
        for row in rows
        for _, key in columns
        if _mark(checks, row, key)
    ]
    for row, key, check in flagged:
        names = ", ".join([*check["failed"], *check["warned"]])
        lines.append(
            f"{_MARKS[check['status']].strip()} {_md(row['dataset'])} / {_md(row['encoder'])}, "
            f"{key}: the evaluation check {'failed' if check['status'] == 'fail' else 'warned'}"
            f" ({_md(names)}); the value may overstate robustness — see checks.md"
        )
    if flagged:
        lines.append("")
    for row in rows:
        changes = "; ".join(
            f"{name}: {info.metric_text} {_fmt(row.get(key))} vs clean {_fmt(row['clean'])} "
            f"({_relative_change(row.get(key), row['clean'])})"
            for name, key in columns
        )
        who = f"{row['dataset']} / {row['encoder']} ({encoder_type_label(row['encoder_type'])})"
        lines.append(f"- {_md(who)} — {_md(changes)}")
    lines.append("")
    return lines


_ATTACK_KEYS = (
    ("EmbedAttack", "embed_attack"),
    ("task", "task_attack"),
    ("strong", "strong_attack"),
)


def _gain(task: str, value: object, base: object) -> tuple[str, bool] | None:
    """Text of a defended value against the standard one, and whether it protects."""
    v, b = _number(value), _number(base)
    if v is None or b is None or not (math.isfinite(v) and math.isfinite(b)):
        return None
    if task_info(task).higher_is_better:
        return f"{v - b:+.2f}", v - b >= 0.02
    if b <= 0:
        return None
    return f"×{v / b:.2f}", v / b <= 0.95


def _versus(
    rows: list[Mapping[str, Any]], against: str, summary: dict[str, dict[str, list[int]]]
) -> list[str]:
    """One line per encoder (neither standard nor ``against``) and task: its metrics against
    those of the ``against`` encoder type on the same dataset (counts go into ``summary``)."""
    lines: list[str] = []
    base_rows = {(r["dataset"], r["task"]): r for r in rows if r["encoder_type"] == against}
    for row in sorted(rows, key=lambda r: (r["dataset"], table_number(r["task"]), _sort_key(r))):
        base = base_rows.get((row["dataset"], row["task"]))
        if row["encoder_type"] in ("standard", against) or base is None:
            continue
        info = task_info(row["task"])
        parts = []
        for name, key in _ATTACK_KEYS:
            gain = _gain(row["task"], row.get(key), base.get(key))
            if gain is None:
                continue
            label = info.attack_label if name == "task" else name
            parts.append(f"{label} {gain[0]}")
            counts = summary.setdefault(encoder_type_label(row["encoder_type"]), {})
            counts.setdefault(name, [0, 0])
            counts[name][0] += int(gain[1])
            counts[name][1] += 1
        clean = _gain(row["task"], row.get("clean"), base.get("clean"))
        if clean is not None:
            parts.append(f"clean {clean[0]}")
        who = f"{row['dataset']} / {row['task']} ({info.metric_text} {info.arrow}), "
        who += f"{row['encoder']} ({encoder_type_label(row['encoder_type'])})"
        lines.append(f"- {_md(who)}: " + ", ".join(parts))
    return lines


def _protection(rows: list[Mapping[str, Any]]) -> list[str]:
    """The "What protects what" section: every defended encoder against the standard one
    (with a summary), then every other defense against DeACL (the paper's defense)."""
    summary: dict[str, dict[str, list[int]]] = {}
    lines = _versus(rows, "standard", summary)
    if not lines:
        return []
    vs_deacl = _versus(rows, "deacl", {})
    what = {"EmbedAttack": "EmbedAttack", "task": "the task attacks", "strong": "strong_attack"}
    sentences = []
    for etype, counts in summary.items():
        said = ", ".join(f"{what[k]} on {c[0]} of {c[1]} tasks" for k, c in counts.items())
        sentences.append(f"{etype} protects against {said}")
    return [
        "## What protects what",
        "",
        "Each defended encoder against the standard encoder of the same dataset, per attack "
        "(accuracy and mIoU: difference, higher is better; RMSE: ratio, lower is better). "
        "An attack counts as protected against when the metric improves by at least 0.02 "
        "(or the RMSE falls by 5 %): " + "; ".join(sentences) + ". Evaluation heads are "
        "fitted fresh on every encoder, so a gain comes from the encoder's features.",
        "",
        *lines,
        "",
        *(["Against DeACL (same conventions):", "", *vs_deacl, ""] if vs_deacl else []),
    ]


def _flat_timings(timings: object, prefix: str = "") -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    if isinstance(timings, Mapping):
        for key, value in timings.items():
            out += _flat_timings(value, f"{prefix}{key}/")
    elif isinstance(timings, (int, float)) and not isinstance(timings, bool):
        out.append((prefix.rstrip("/"), float(timings)))
    return out


def write_tables(results: Mapping[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write ``results.csv`` and ``tables.md`` (the paper's Tables 1–3) into ``out_dir``.

    ``results.csv`` holds one line per row with the columns ``task, dataset, encoder,
    encoder_type, metric, clean, embed_attack, task_attack, strong_attack`` and the column
    of every registered attack suite present (values at full precision; missing values,
    None or NaN, and attacks not run are empty cells). A table
    gets a ``strong_attack`` column when any of its rows has one (``suite = ["paper",
    "strong"]``).
    ``tables.md`` holds one Markdown table per task present (classification, segmentation,
    depth as Tables 1–3, then registered tasks numbered after them, see
    :func:`~ssl_robust.tasks.table_number`), rows sorted by dataset, encoder and encoder
    type (Standard before DeACL), values with two decimals (``–`` when missing), and under
    each table the relative change of every attack against the clean value.

    Args:
        results: a results dict following the ``results.json`` contract.
        out_dir: the directory to write into (created if missing).

    Returns:
        ``{"csv": path to results.csv, "markdown": path to tables.md}``.

    Raises:
        SSLRobustValueError: if ``results`` breaks the contract (see :func:`validate_results`).

    Example:
        >>> import tempfile
        >>> row = {"task": "classification", "dataset": "shapes", "encoder": "vit",
        ...        "encoder_type": "standard", "metric": "accuracy", "clean": 0.93,
        ...        "embed_attack": 0.1, "task_attack": 0.0}
        >>> with tempfile.TemporaryDirectory() as d:
        ...     paths = write_tables({"rows": [row]}, d)
        ...     print(paths["markdown"].read_text().splitlines()[6])
        | shapes | vit | Standard | 0.93 | 0.10 | 0.00 |
    """
    validate_results(results)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[Mapping[str, Any]] = list(results["rows"])

    csv_path = out / "results.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        extra = [
            c for c in suite_columns()[len(OPTIONAL_ROW_FIELDS) :] if any(c in r for r in rows)
        ]
        fields = (*ROW_FIELDS, *OPTIONAL_ROW_FIELDS, *extra)
        writer.writerow(fields)
        for row in rows:
            writer.writerow([_csv_cell(row.get(k)) for k in fields])

    lines = ["# Benchmark results", ""]
    versions = results.get("versions")
    if isinstance(versions, Mapping) and versions:
        lines += [" · ".join(f"{k} {v}" for k, v in versions.items()), ""]
    present = ordered_tasks({r["task"] for r in rows})
    if not present:
        lines += ["_No results._", ""]
    checks = _checks_by_cell(results)
    for task in present:
        lines += _task_table(task, [r for r in rows if r["task"] == task], checks)
    lines += _protection(rows)
    timings = _flat_timings(results.get("timings"))
    if timings:
        lines += ["## Timings", "", "| Step | Value |", "|---|---|"]
        lines += [f"| {_md(k or 'total')} | {v:.2f} |" for k, v in timings]
        lines.append("")
    md_path = out / "tables.md"
    md_path.write_text("\n".join(lines), encoding="utf-8")
    paths = {"csv": csv_path, "markdown": md_path}
    if results.get("checks"):
        paths.update(write_checks(results, out))
    return paths


def write_checks(results: Mapping[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write ``checks.md`` (every evaluation check as its Markdown report) and ``checks.json``
    (the ``checks`` records of ``results.json``) into ``out_dir``.

    Returns:
        ``{"checks_markdown": path, "checks_json": path}``.
    """
    out = Path(out_dir)
    records = list(results.get("checks") or [])
    lines = ["# Evaluation checks", ""]
    counts = {s: sum(r["status"] == s for r in records) for s in ("pass", "warn", "fail", "skip")}
    lines += [", ".join(f"{n} {s}" for s, n in counts.items()), ""]
    for rec in records:
        lines.append(
            f"## {_md(rec['dataset'])} / {_md(rec['encoder'])} / {rec['task']} — "
            f"{rec['attack']}: {rec['status'].upper()}"
        )
        lines.append("")
        report = rec.get("report")
        if report:
            lines.append(EvaluationReport.from_dict(report).to_markdown())
        else:
            lines += ["_Not checked (whole images of different sizes)._", ""]
    md = out / "checks.md"
    md.write_text("\n".join(lines), encoding="utf-8")
    js = out / "checks.json"
    atomic_write_json(records, js)
    return {"checks_markdown": md, "checks_json": js}


def render_report(out_dir: str | Path) -> dict[str, Any]:
    """Render the report of a benchmark output directory (what ``ssl-robust report DIR`` runs).

    Reads and validates ``out_dir/results.json``, writes the tables (:func:`write_tables`) and,
    if matplotlib is installed, the figures (:func:`write_figures`).

    Args:
        out_dir: a directory written by ``ssl-robust bench --out DIR``.

    Returns:
        ``{"tables": {"csv": Path, "markdown": Path}, "figures": [Path, ...]}``. ``figures`` is
        empty when matplotlib is missing (a warning says so).

    Raises:
        FileNotFoundError: if ``out_dir/results.json`` (or a gallery file it names) is missing.
        SSLRobustValueError: if ``results.json`` is malformed or breaks the contract.

    Example:
        >>> import json, tempfile
        >>> from pathlib import Path
        >>> row = {"task": "depth", "dataset": "nyu", "encoder": "vit", "encoder_type": "deacl",
        ...        "metric": "rmse", "clean": 0.68, "embed_attack": 0.92, "task_attack": None}
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = (Path(d) / "results.json").write_text(json.dumps({"rows": [row]}))
        ...     report = render_report(d)
        ...     print(report["tables"]["markdown"].read_text().splitlines()[-1].split("; ")[0])
        - nyu / vit (DeACL) — EmbedAttack: RMSE 0.92 vs clean 0.68 (+35 %)
    """
    results = load_results(out_dir)
    tables = write_tables(results, out_dir)
    try:
        load_matplotlib()
    except ModuleNotFoundError as err:
        warnings.warn(f"tables written, figures skipped: {err}", UserWarning, stacklevel=2)
        return {"tables": tables, "figures": []}
    return {"tables": tables, "figures": write_figures(results, out_dir)}
