"""The README's set-up commands are the ones CI runs, and its quickstart runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _ci_command(name: str) -> str:
    text = (ROOT / ".ci" / "run").read_text()
    match = re.search(rf"^{name}='(.+)'$", text, flags=re.MULTILINE)
    assert match, f"{name}= not found in .ci/run"
    return match.group(1)


def test_readme_setup_commands_are_the_ci_commands():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Set-up.*?```bash\n(.*?)```", readme, flags=re.DOTALL)
    assert block, "README has no Set-up bash block"
    lines = [ln for ln in block.group(1).splitlines() if ln.strip()]
    assert lines == [_ci_command("INSTALL"), _ci_command("TEST")]


def test_readme_quickstart_runs():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Quickstart\n```python\n(.*?)```", readme, flags=re.DOTALL)
    assert block
    code = block.group(1)
    assert "from ssl_robust.attacks import PGD" in code
    namespace: dict[str, object] = {}
    exec(compile(code, "README quickstart", "exec"), namespace)
    adv = namespace["adv"]
    images = namespace["images"]
    assert adv.shape == images.shape  # type: ignore[attr-defined]
    assert float((adv - images).abs().max()) <= 8 / 255 + 1e-6  # type: ignore[operator]


def test_the_paper_is_cited_correctly_and_the_package_has_a_citation_file():
    readme = (ROOT / "README.md").read_text()
    title = "Benchmarking Robust Self-Supervised Learning Across Diverse\nDownstream Tasks"
    assert title in readme and "Kowalczuk" in readme and "Kowalczyk" not in readme
    assert "arXiv:2407.12588" in readme and "@article{kowalczuk2024benchmarking," in readme
    cff = (ROOT / "CITATION.cff").read_text()
    assert cff.startswith("cff-version: 1.2.0")
    authors = re.findall(r"family-names: (.+)", cff)
    assert authors == ["Kowalczuk", "Dubiński", "Ashari Ghomi", "Sui", "Stein", "Wu",
                       "Cresswell", "Boenisch", "Dziedzic"]  # fmt: skip
    assert 'version: "0.1.0.dev0"' in cff
    import ssl_robust

    assert ssl_robust.__version__ == "0.1.0.dev0"
