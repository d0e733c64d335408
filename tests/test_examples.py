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
    assert rows["clean"] >= 0.9
    assert rows["PGD"] <= 0.25  # the paper's finding: PGD collapses a non-robust probe
