"""The runnable snippets of the docs pages run (those marked below, in order)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# page -> indices of its ```python blocks that are complete programs
RUNNABLE = {
    "docs/metrics.md": (0, 1),
    "docs/encoders.md": (0,),
}


def _blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / page).read_text(), flags=re.DOTALL)


@pytest.mark.parametrize(("page", "index"), [(p, i) for p, ix in RUNNABLE.items() for i in ix])
def test_docs_snippet_runs(page: str, index: int, capsys: pytest.CaptureFixture[str]) -> None:
    code = _blocks(page)[index]
    exec(compile(code, f"{page} block {index}", "exec"), {"__name__": "__docs__"})


def test_every_page_opens_with_a_runnable_snippet() -> None:
    for page in RUNNABLE:
        text = (ROOT / page).read_text()
        first_block = text.find("```")
        assert text.find("```python", 0) == first_block, page
        assert 0 in RUNNABLE[page], page
