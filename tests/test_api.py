"""The public API surface (DESIGN.md contract) and import hygiene."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import pytest

import ssl_robust

PUBLIC = {
    "ssl_robust.attacks": [
        "Attack",
        "AttackResult",
        "PGD",
        "APGD",
        "EmbedAttack",
        "Ensemble",
        "EnsembleResult",
        "strong_attack",
        "pgd",
    ],
    "ssl_robust.losses": [
        "dlr_loss",
        "targeted_dlr_loss",
        "logit_margin",
        "sea_loss",
        "SEGMENTATION_LOSSES",
        "l1_log_loss",
    ],
    "ssl_robust": ["APGD", "Ensemble", "strong_attack"],
    "ssl_robust.attacks.core": [
        "pgd",
        "AttackResult",
        "Linf",
        "L2",
        "Norm",
        "Schedule",
        "FixedStep",
        "APGDStep",
        "SCHEDULES",
    ],
    "ssl_robust.encoders": ["EncoderOutput", "Encoder", "VisionTransformer"],
    "ssl_robust.adaptors": ["LinearClassifier", "TaskModel"],
    "ssl_robust.metrics": ["Accuracy"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_names_exist_and_are_exported(module):
    mod = importlib.import_module(module)
    for name in PUBLIC[module]:
        assert hasattr(mod, name), name
        assert name in mod.__all__, name
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.__all__ lists missing {name}"


def test_attack_signatures_follow_the_contract():
    from ssl_robust.attacks import PGD, Attack, EmbedAttack
    from ssl_robust.attacks.core import pgd

    sig = inspect.signature(Attack.__init__).parameters
    defaults = {k: v.default for k, v in sig.items() if v.kind is v.KEYWORD_ONLY}
    assert defaults == {
        "eps": 8 / 255,
        "step_size": 2 / 255,
        "steps": 20,
        "norm": "linf",
        "random_start": True,
        "early_stop": False,
        "select": "best",
        "generator": None,
        "eval_mode": True,
        "schedule": "fixed",
        "restarts": 1,
        "eot_iter": 1,
    }
    assert inspect.signature(PGD.__init__).parameters["targeted"].default is False
    emb = inspect.signature(EmbedAttack.__init__).parameters
    assert emb["tokens"].default == "cls" and emb["distance"].default == "l2"
    core = inspect.signature(pgd).parameters
    assert list(core)[:2] == ["loss_fn", "images"]
    assert {k for k, v in core.items() if v.kind is v.KEYWORD_ONLY} == {
        "eps",
        "step_size",
        "steps",
        "norm",
        "random_start",
        "early_stop",
        "select",
        "generator",
        "schedule",
        "restarts",
        "eot_iter",
    }
    from ssl_robust.attacks import AttackResult

    # the four contract fields first; the optional diagnostics after them, defaulting to None
    assert list(AttackResult.__dataclass_fields__) == [
        "adversarial", "loss", "success", "steps", "trace", "trace_success", "queries",
    ]  # fmt: skip


def test_import_pulls_no_optional_dependency():
    code = (
        "import sys, torch, torchvision\n"
        "before = set(sys.modules)\n"
        "import ssl_robust, ssl_robust.attacks, ssl_robust.encoders, ssl_robust.adaptors, "
        "ssl_robust.metrics\n"
        "bad = [m for m in ('tqdm', 'matplotlib', 'timm', 'transformers', 'torchattacks') "
        "if m in set(sys.modules) - before]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_version_and_typed_marker():
    from pathlib import Path

    assert isinstance(ssl_robust.__version__, str)
    assert (Path(ssl_robust.__file__).parent / "py.typed").exists()
