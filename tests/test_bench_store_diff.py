"""An output directory holding another config's results is refused with the differing keys."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ssl_robust.bench import default_spec
from ssl_robust.bench.store import ResultsStore, config_differences


def _spec():  # type: ignore[no-untyped-def]
    return default_spec()


def test_refusal_lists_each_differing_key_with_stored_and_current_values(tmp_path: Path) -> None:
    spec = _spec()
    store = ResultsStore(tmp_path, spec)
    store.prepare(force=False)
    store.save()
    changed = dataclasses.replace(
        spec,
        attack=dataclasses.replace(spec.attack, steps=3, strong_steps=5),
        eval=dataclasses.replace(spec.eval, subset=16),
        out="elsewhere",  # not a result-changing key: not listed
        device="cpu",
    )
    with pytest.raises(ValueError) as err:
        ResultsStore(tmp_path, changed).prepare(force=False)
    msg = str(err.value)
    assert "attack.steps: stored 20, now 3" in msg
    assert "attack.strong_steps: stored 10, now 5" in msg
    assert "eval.subset: stored 128, now 16" in msg
    assert "out:" not in msg and "fingerprint" not in msg and "--force" in msg
    # the same config (other out) resumes; force discards
    ResultsStore(tmp_path, dataclasses.replace(spec, out="x")).prepare(force=False)
    ResultsStore(tmp_path, changed).prepare(force=True)


def test_list_entries_are_named_and_nested_options_compared() -> None:
    spec = _spec()
    ds = spec.datasets[0]
    other = dataclasses.replace(
        spec, datasets=(dataclasses.replace(ds, options={**ds.options, "size": 10}),)
    )
    diffs = config_differences(spec.to_dict(), other.to_dict())
    assert diffs == ["datasets['shapes'].options.size: stored 4000, now 10"]
    assert config_differences(spec.to_dict(), spec.to_dict()) == []
    added = config_differences({"attack": {}}, {"attack": {"suite": ["paper"]}})
    assert added == ["attack.suite: stored not set, now ['paper']"]


def test_old_results_without_a_config_fall_back_to_the_fingerprints(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text('{"fingerprint": "abc", "rows": []}')
    with pytest.raises(ValueError, match=r"fingerprint abc vs [0-9a-f]{16}"):
        ResultsStore(tmp_path, _spec()).prepare(force=False)
