"""The example scripts run (quick mode) and print what they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_classification_example_prints_the_table():
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "classification_robustness.py"), "--quick"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    rows = {ln.split()[0]: float(ln.split()[1]) for ln in out.splitlines()[1:4]}
    assert set(rows) == {"clean", "EmbedAttack", "PGD"}
    assert rows["clean"] > 0.5  # the probe learned (4 classes, the majority one is ~27 %)
    assert rows["EmbedAttack"] < 0.75 * rows["clean"]  # label-free, still harmful
    assert rows["PGD"] < 0.25 * rows["clean"]  # the paper's finding: PGD collapses the probe
    assert "64 test images" in out


def _table(script: str) -> dict[str, list[float]]:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    rows = {}
    for line in out.splitlines()[1:]:
        *name, a, b = line.split()[:-1] if script.startswith("depth") else line.split()
        rows[" ".join(name)] = [float(a), float(b)]
    return rows


def test_segmentation_example_shows_both_attacks_collapse_miou():
    rows = _table("segmentation_robustness.py")
    clean = rows["clean"][0]
    assert clean > 0.3
    assert rows["uniform noise (eps 8/255)"][0] > 0.8 * clean  # noise is not an attack
    assert rows["EmbedAttack(tokens='patch')"][0] < 0.5 * clean
    assert rows["SegPGD"][0] < 0.5 * clean


def test_depth_example_shows_both_attacks_raise_rmse():
    rows = _table("depth_robustness.py")
    clean = rows["clean"][0]
    assert rows["uniform noise (eps 8/255)"][0] < 1.1 * clean
    assert rows["EmbedAttack(tokens='patch')"][0] > 1.2 * clean
    assert rows["DepthPGD"][0] > 1.5 * clean
