"""The facts the docs state are the code's: a doc that drifts from the code fails here.

Each test reads a documented fact (a column, a key, an option, a default) from the Markdown
and compares it with what the code writes or accepts, generically: a key added to the code
must be documented, a documented key must exist, so nothing here lists the keys itself.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import re
import sys
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import shapes_entry

from ssl_robust.bench import default_spec, run_benchmark
from ssl_robust.bench.spec import (
    AttackSpec,
    BenchSpec,
    EncoderSpecEntry,
    EvalSpec,
    HeadSpec,
    spec_from_dict,
)
from ssl_robust.data import create_dataset, list_datasets
from ssl_robust.data.shapes import ShapesDataset
from ssl_robust.tasks import get_task, list_tasks

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
BENCH_DOC = ROOT / "docs" / "benchmark.md"
DATA_DOC = ROOT / "docs" / "data.md"
DOC_PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]


# ----------------------------------------------------------------------------- helpers
def _section(text: str, heading: str) -> str:
    """The text under ``heading`` up to the next heading of the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    start = text.index(heading + "\n") + len(heading) + 1
    stop = re.search(rf"^#{{1,{level}}} ", text[start:], flags=re.MULTILINE)
    return text[start : start + stop.start()] if stop else text[start:]


def _fenced(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


def _table_rows(text: str) -> list[list[str]]:
    """Cells of the body rows of the first Markdown table in ``text``."""
    rows: list[list[str]] = []
    for line in text[text.index("\n|") + 1 :].splitlines() if "\n|" in text else []:
        if not line.startswith("|"):
            break
        if not re.match(r"^\|[-| ]+\|$", line):
            rows.append([c.strip() for c in line.strip().strip("|").split(" | ")])
    return rows[1:]


def _ticked(text: str) -> list[str]:
    """Identifiers written in backticks (``"quoted"`` values and expressions left out)."""
    return re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", text)


def _literal(text: str) -> Any:
    """A documented value (TOML syntax: numbers, strings, lists, inline tables)."""
    return tomllib.loads(f"v = {text}")["v"]


# ----------------------------------------------------------------------------- a real run
def _tiny_strong_spec() -> BenchSpec:
    return BenchSpec(
        encoders=(EncoderSpecEntry(name="tiny", registry="vit_test"),),
        datasets=(shapes_entry(),),
        attack=AttackSpec(
            steps=1,
            curve_eps=(2 / 255,),
            curve_subset=2,
            suite=("paper", "strong"),
            strong_steps=1,
        ),
        heads={t: HeadSpec(epochs=1, train_size=8, batch_size=8) for t in list_tasks()},
        eval=EvalSpec(subset=4, batch_size=4, gallery=1),
        threads=1,
    )


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A tiny benchmark with the strong suite, as the embedded default runs it."""
    out = tmp_path_factory.mktemp("facts")
    return out, run_benchmark(_tiny_strong_spec(), out=out, progress=False)


# ----------------------------------------------------------------------------- results files
def test_results_json_keys_are_the_documented_ones(written: tuple[Path, dict[str, Any]]) -> None:
    _, results = written
    rows = _table_rows(_section(BENCH_DOC.read_text(), "### `results.json`"))
    table = {key: row for row in rows for key in _ticked(row[0])}
    documented_top = set(table)
    assert set(results) <= documented_top, f"undocumented keys: {set(results) - documented_top}"
    for section in ("rows", "curves", "galleries"):
        content = re.sub(r"\([^)]*\)", "", table[section][2])  # the keys, not the asides
        documented = set(_ticked(content))
        written_keys = set().union(*(r.keys() for r in results[section]))
        assert written_keys == documented, (section, written_keys ^ documented)


def test_results_csv_header_is_the_documented_one(written: tuple[Path, dict[str, Any]]) -> None:
    out, _ = written
    doc = _section(BENCH_DOC.read_text(), "### `results.csv`")
    header = re.search(r"Header `([^`]+)`", doc)
    assert header, "docs/benchmark.md no longer states the CSV header"
    assert (out / "results.csv").read_text().splitlines()[0] == header.group(1)


def test_tables_md_columns_are_the_documented_ones(written: tuple[Path, dict[str, Any]]) -> None:
    out, results = written
    doc = _section(BENCH_DOC.read_text(), "### `tables.md`")
    columns = re.search(r"columns\n?\s*`([^`]+)`", doc)
    assert columns, "docs/benchmark.md no longer lists the tables.md columns"
    documented = [c.replace("…", "").strip().split("/") for c in columns.group(1).split(" | ")]
    headers = [ln for ln in (out / "tables.md").read_text().splitlines()
               if ln.startswith("| Dataset")]  # fmt: skip
    tasks = list(dict.fromkeys(r["task"] for r in results["rows"]))
    assert len(headers) == len(tasks) == 3
    for task, line in zip(tasks, headers, strict=True):
        spec = get_task(task)
        cells = [c.strip().removesuffix(f" {spec.metric_label} {spec.arrow}").strip()
                 for c in line.strip("|").split("|")]  # fmt: skip
        assert len(cells) == len(documented), (task, cells, documented)
        for cell, names in zip(cells, documented, strict=True):
            assert cell in names, (task, cell, names)


# ----------------------------------------------------------------------------- the default
def test_the_embedded_default_is_described_as_it_is() -> None:
    spec = default_spec()
    doc = _section(BENCH_DOC.read_text(), "## The embedded default")
    data = re.search(r"- \*\*Data\*\*:(.*?)(?=\n- |\n\n)", doc, flags=re.DOTALL)
    assert data, "docs/benchmark.md: no **Data** bullet under the embedded default"
    text = " ".join(data.group(1).split())
    (ds,) = spec.datasets
    pairs = dict(re.findall(r"`(\w+) = ([^`]+)`", text))
    assert {k: _literal(v) for k, v in pairs.items()} == dict(ds.options)
    assert f"at {ds.image_size} px" in text
    trained = re.search(r"heads trained on (\d+) images, evaluated on (\d+)", text)
    assert trained
    assert {h.train_size for h in spec.heads.values()} == {int(trained.group(1))}
    assert spec.eval.subset == int(trained.group(2))
    suites = _section(BENCH_DOC.read_text(), "## Attack suites: `paper` and `strong`")
    steps = re.search(
        r"embedded default runs both suites, with (\d+) steps", " ".join(suites.split())
    )
    assert steps and spec.attack.suite == ("paper", "strong")
    assert spec.attack.strong_steps == int(steps.group(1))


def test_snippets_with_the_bundled_encoder_use_the_benchmark_contrast() -> None:
    """Every doc snippet, example and config pairing ``vit_tiny_shapes`` with ``shapes`` data
    renders the scenes as the embedded benchmark does."""
    contrast = default_spec().datasets[0].options["contrast"]
    units: list[tuple[str, str]] = []
    for page in DOC_PAGES:
        units += [(f"{page.name} block", b) for b in _fenced(page.read_text(), "python")]
    for folder, pattern in (("examples", "*.py"), ("configs", "*.toml"), ("benchmarks", "*.py")):
        units += [(str(f.relative_to(ROOT)), f.read_text()) for f in (ROOT / folder).glob(pattern)]
    checked = 0
    for where, code in units:
        if "vit_tiny_shapes" in code and re.search(r"""["']shapes["']""", code):
            found = re.findall(r"""contrast["']?\s*[=:]\s*([0-9.]+)""", code)
            assert found and all(float(v) == contrast for v in found), where
            checked += 1
    assert checked >= 4


# ----------------------------------------------------------------------------- config keys
def _commented_variants(block: str) -> Iterator[str]:
    """The block as written, then once per commented-out ``# key = value`` line with that
    line uncommented (the keys the docs show as options must be valid too)."""
    yield block
    lines = block.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^#\s?\w+ = ", line):
            yield "\n".join([*lines[:i], line.lstrip("#").lstrip(), *lines[i + 1 :]])


def _bench_blocks() -> list[tuple[str, str]]:
    blocks = [(page.name, b) for page in DOC_PAGES for b in _fenced(page.read_text(), "toml")]
    assert blocks, "no TOML example in the docs"
    return blocks


def _nested(hint: Any) -> list[tuple[str, type]]:
    """Spec dataclasses a field holds: ``("one", cls)`` (a table), ``("many", cls)`` (an array
    of tables) or ``("map", cls)`` (a table of tables, e.g. ``[heads.<task>]``)."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return [("one", hint)]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    found: list[tuple[str, type]] = []
    if origin in (tuple, list):
        found += [("many", cls) for _, cls in _nested(args[0])] if args else []
    elif origin is not None and isinstance(origin, type) and issubclass(origin, Mapping):
        found += [("map", cls) for _, cls in _nested(args[-1])] if args else []
    else:  # Optional / Union
        for arg in args:
            found += _nested(arg)
    return found


def _spec_classes(cls: type, into: dict[type, set[str]]) -> dict[type, set[str]]:
    """Every spec dataclass reachable from ``cls`` and its field names."""
    if cls not in into:
        into[cls] = {f.name for f in dataclasses.fields(cls)}
        for hint in typing.get_type_hints(cls).values():
            for _, sub in _nested(hint):
                _spec_classes(sub, into)
    return into


def _keys_used(
    data: Any, cls: type, into: dict[type, set[str]], *, unknown: list[str] | None = None
) -> None:
    """Record which fields of which spec dataclass a parsed config sets (nested tables too),
    and in ``unknown`` the keys that are no field (as ``Class.key``)."""
    if not isinstance(data, Mapping):
        return
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        into.setdefault(cls, set()).add(key)
        if unknown is not None and key not in hints:
            unknown.append(f"{cls.__name__}.{key}")
        for kind, sub in _nested(hints.get(key)):
            if kind == "many" and isinstance(value, Mapping):  # a fragment: [encoders.x]
                kind = "one"
            items = {"one": [value], "many": value, "map": getattr(value, "values", list)()}[kind]
            for item in items if isinstance(items, (list, tuple)) else list(items):
                _keys_used(item, sub, into, unknown=unknown)


@pytest.mark.parametrize(
    ("page", "block"), _bench_blocks(), ids=lambda v: v if len(v) < 40 else "toml"
)
def test_every_key_of_the_docs_toml_examples_is_accepted(page: str, block: str) -> None:
    """A whole config (encoders and datasets) goes through the real parser, values included;
    a fragment (one table, e.g. ``[encoders.defense]`` naming a plugin's method) has each of
    its keys checked against the spec's fields."""
    for variant in _commented_variants(block):
        data = tomllib.loads(variant)
        if _is_pyproject(data):
            continue
        fields = {f.name for f in dataclasses.fields(BenchSpec)}
        assert set(data) <= fields, (
            f"{page}: a TOML example with keys {sorted(set(data) - fields)} is not a benchmark "
            "config; teach tests/test_docs_facts.py the parser of its kind"
        )
        if all(isinstance(data.get(k), list) for k in ("encoders", "datasets")):
            spec = spec_from_dict(data)  # unknown keys and bad values raise
            assert spec.encoders and spec.datasets, page
        else:
            unknown: list[str] = []
            _keys_used(data, BenchSpec, {}, unknown=unknown)
            assert not unknown, f"{page}: unknown config keys {unknown} in {variant!r}"


def _is_pyproject(data: Mapping[str, Any]) -> bool:
    """A ``pyproject.toml`` excerpt (entry points), not a config of ours."""
    return bool(data) and set(data) <= {"project", "tool", "build-system"}


def test_every_config_key_is_shown_in_the_docs_toml_example() -> None:
    """The other direction: a key the config accepts but no example shows fails here (as
    `suite` and `strong_steps` once did)."""
    used: dict[type, set[str]] = {}
    for _, block in _bench_blocks():
        for variant in _commented_variants(block):
            data = tomllib.loads(variant)
            if not _is_pyproject(data):
                _keys_used(data, BenchSpec, used)
    missing = {
        cls.__name__: sorted(fields - used.get(cls, set()))
        for cls, fields in _spec_classes(BenchSpec, {}).items()
        if fields - used.get(cls, set())
    }
    assert not missing, f"config keys missing from the docs' TOML example: {missing}"


def test_the_shipped_configs_parse() -> None:
    from ssl_robust.bench import load_spec

    assert load_spec(ROOT / "configs" / "paper.toml").encoders


# ----------------------------------------------------------------------------- dataset options
def _accepted_options(name: str) -> set[str]:
    """The keywords ``create_dataset(name, ...)`` accepts, read from its refusal of an
    unknown one (which lists the valid names)."""
    with pytest.raises(TypeError) as err:
        create_dataset(name, None, "train", not_an_option_=1)
    listed = re.search(r"expected one of: (.*)$", str(err.value))
    assert listed, f"create_dataset({name!r}) no longer lists its valid options: {err.value}"
    return {o.strip() for o in listed.group(1).split(",")}


def _common_arguments() -> set[str]:
    params = inspect.signature(create_dataset).parameters.values()
    return {p.name for p in params if p.kind is not p.VAR_KEYWORD} - {"name"}


def test_docs_list_each_datasets_options() -> None:
    doc = _section(DATA_DOC.read_text(), "## Dataset options")
    header = re.search(r"\| dataset \| options \(beyond (.*?)\) \|", doc)
    assert header, "docs/data.md: the options table lost its header"
    assert set(_ticked(header.group(1))) == _common_arguments()
    documented = {}
    for cells in _table_rows(doc):
        opts = cells[1].split("(")[0]
        documented[cells[0].strip("`")] = set() if opts.strip() == "none" else set(_ticked(opts))
    assert sorted(documented) == list_datasets()
    keyword_only = {p.name for p in inspect.signature(create_dataset).parameters.values()
                    if p.kind is p.KEYWORD_ONLY}  # fmt: skip
    for name in list_datasets():
        assert documented[name] == _accepted_options(name) - keyword_only, name


def test_shapes_options_table_names_every_option_with_its_real_default() -> None:
    doc = _section(DATA_DOC.read_text(), "### Options of `shapes`")
    table = {cells[0].strip("`"): cells[1] for cells in _table_rows(doc)}
    keyword_only = {p.name for p in inspect.signature(create_dataset).parameters.values()
                    if p.kind is p.KEYWORD_ONLY}  # fmt: skip
    assert set(table) == _accepted_options("shapes") - keyword_only
    # the factory's own signature: every option of ShapesDataset is reachable and documented
    # (its `seed` is create_dataset's `scene_seed`; `split` and `transform` are arguments)
    params = inspect.signature(ShapesDataset).parameters
    assert set(params) - {"split", "transform", "seed"} | {"scene_seed"} == set(table)
    meaning = {cells[0].strip("`"): cells[2] for cells in _table_rows(doc)}
    assert "`ShapesDataset(seed=)`" in meaning["scene_seed"]

    def samples(option: str, value: Any | None) -> list[dict[str, torch.Tensor]]:
        """16 samples with ``option=value`` (None: not passed); for ``size``, the length."""
        opts = {} if value is None else {option: value}
        if option == "size":
            return [{"n": torch.tensor(len(create_dataset("shapes", **opts)))}]
        ds = create_dataset("shapes", split="val", size=16, **opts)
        return [ds[i] for i in range(16)]

    def same(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]]) -> bool:
        return all(torch.equal(x[k], y[k]) for x, y in zip(a, b, strict=True) for k in x)

    for option, default in table.items():
        value = _literal(default.split()[0])
        base = samples(option, None)
        assert same(samples(option, value), base), (option, value)
        other = {int: lambda v: v + 1, float: lambda v: v / 2}[type(value)](value)
        differs = not same(samples(option, other), base)
        assert differs, f"shapes option {option!r}: the documented default {value} is not it"


# ----------------------------------------------------------------------------- DeACL in place
def test_deacl_trains_the_encoder_it_is_given_in_place_as_documented() -> None:
    from ssl_robust.defenses import DeACLConfig, DeACLTrainer
    from ssl_robust.encoders import VisionTransformer

    doc = (ROOT / "docs" / "robust_finetuning.md").read_text()
    quick = _fenced(_section(doc, "## Quick start"), "python")[0]
    assert "copy.deepcopy(encoder)" in quick and "trained in place" in doc
    enc = VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2)
    baseline = copy.deepcopy(enc)
    trainer = DeACLTrainer(enc, config=DeACLConfig(steps=1, epochs=1, warmup_epochs=0))
    assert trainer.student is enc
    trainer.training_step(torch.rand(4, 3, 16, 16))
    changed = [
        k for k, v in enc.state_dict().items() if not torch.equal(v, baseline.state_dict()[k])
    ]
    assert changed  # the encoder passed in was updated; the deep copy kept the original
    assert all(
        torch.equal(v, trainer.teacher.state_dict()[k]) for k, v in baseline.state_dict().items()
    )
