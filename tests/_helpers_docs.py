"""Reading the documented config keys and example configs the docs tests compare with code."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file as a dict (tomllib, or tomli before Python 3.11)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    return tomllib.loads(path.read_text())


def documented_config_keys(doc: Path, section: str) -> dict[str, set[str]]:
    """The keys of the tables of one docs section, per TOML table ("" for the top level).

    A table opens with a line ``Top level`` or ``\\`[table]\\``` (dotted and ``<task>``-style
    names too); each ``| `key` |`` row below it is one documented key.
    """
    text = doc.read_text().split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    keys: dict[str, set[str]] = {}
    table = ""
    for line in text.splitlines():
        head = re.match(r"^(Top level|`\[([\w.<>]+)\]`)", line)
        if head:
            table = head.group(2) or ""
        row = re.match(r"^\| `(\w+)` \|", line)
        if row:
            keys.setdefault(table, set()).add(row.group(1))
    return keys
