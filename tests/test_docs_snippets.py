"""The runnable snippets of the docs pages run (the first ```python block under a heading)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# (page, heading whose first python block is a complete program; "" = the page's top)
RUNNABLE = [
    ("docs/attacks.md", ""),
    ("docs/benchmark.md", ""),
    ("docs/data.md", ""),
    ("docs/robust_finetuning.md", ""),
    ("docs/robust_finetuning.md", "## Your own loop"),
    ("docs/heads.md", ""),
    ("docs/metrics.md", ""),
    ("docs/metrics.md", "## Logging from a user's loop"),
    ("docs/encoders.md", ""),
    ("docs/data.md", "## Transforms: torchvision v2 on `tv_tensors`"),
    ("docs/data.md", "## One data path"),
    ("docs/evaluation.md", ""),
    ("docs/evaluation.md", "## One place per task"),
    ("docs/reliability.md", ""),
]
OPENS_WITH_SNIPPET = (
    "docs/attacks.md",
    "docs/benchmark.md",
    "docs/data.md",
    "docs/robust_finetuning.md",
    "docs/encoders.md",
    "docs/evaluation.md",
    "docs/heads.md",
    "docs/metrics.md",
    "docs/reliability.md",
)


def _block_after(page: str, heading: str) -> str:
    text = (ROOT / page).read_text()
    start = text.index(heading) if heading else 0
    match = re.search(r"```python\n(.*?)```", text[start:], flags=re.DOTALL)
    assert match, f"no python block under {heading!r} in {page}"
    return match.group(1)


@pytest.mark.parametrize(("page", "heading"), RUNNABLE)
def test_docs_snippet_runs(page: str, heading: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = _block_after(page, heading)
    exec(compile(code, f"{page} {heading}", "exec"), {"__name__": "__docs__"})


@pytest.mark.parametrize("page", OPENS_WITH_SNIPPET)
def test_page_opens_with_a_runnable_snippet(page: str) -> None:
    text = (ROOT / page).read_text()
    title_end = text.index("\n") + 1
    assert text[title_end:].lstrip().startswith("```python"), page
