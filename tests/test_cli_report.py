"""``ssl-robust report DIR`` prints plain paths and a short summary, not a Python dict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ssl_robust.cli import main

ROW = {"task": "classification", "dataset": "shapes", "encoder": "vit", "encoder_type": "standard",
       "metric": "accuracy", "clean": 0.9, "embed_attack": 0.2, "task_attack": None}  # fmt: skip


def test_report_prints_plain_paths_and_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [ROW, {**ROW, "task": "depth", "metric": "rmse", "encoder": "vit_deacl",
                  "encoder_type": "deacl"}]  # fmt: skip
    curve = {**{k: ROW[k] for k in ("task", "dataset", "encoder", "encoder_type", "metric")},
             "attack": "embed_attack", "eps": [0.0, 8 / 255], "values": [0.9, 0.2]}  # fmt: skip
    (tmp_path / "results.json").write_text(json.dumps({"rows": rows, "curves": [curve]}))
    assert main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "PosixPath" not in out and "{" not in out and "[" not in out
    lines = out.strip().splitlines()
    assert lines[0] == (
        "2 result row(s) — tasks: classification, depth; datasets: shapes; encoders: vit, vit_deacl"
    )
    assert lines[1] == f"tables:  {tmp_path / 'tables.md'}"
    assert lines[2] == f"csv:     {tmp_path / 'results.csv'}"
    assert (tmp_path / "tables.md").is_file() and (tmp_path / "results.csv").is_file()
    pytest.importorskip("matplotlib")
    figures = sorted((tmp_path / "figures").glob("*.png"))
    assert figures and lines[3] == f"figures: {len(figures)} in {tmp_path / 'figures'}"


def test_report_of_a_missing_directory_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        len(err.splitlines()) == 1 and "no results.json" in err and "ssl-robust bench --out" in err
    )
