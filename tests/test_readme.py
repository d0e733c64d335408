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
